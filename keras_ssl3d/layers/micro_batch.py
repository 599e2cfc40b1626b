"""Micro-batches: run a model's training batch in sequential, rematerialised parts.

Why: a training step keeps every activation of its whole batch for the backward pass. Exemplar at
128^3 sends 2 volumes per sample through the encoder, so batch 2 is 4 volumes (> 9 GB measured).
Cutting the batch into parts, each under ``keras.remat``, keeps only the parts' inputs and outputs:
the backward pass recomputes one part at a time, so the activations of a single part are alive at
once. The gradient is exact for a loss that couples the samples (in-batch negatives) -- which
gradient accumulation cannot do -- because every part's output is still part of one loss.

What changes: batch normalisation sees each part on its own (its batch statistics are those of the
part, as with a smaller batch; the moving averages are updated once per part). Without batch
normalisation the loss and gradients equal those of the whole batch.
"""

import keras
from keras import ops

from keras_ssl3d.errors import ConfigError


def check_micro_batches(parts):
    parts = int(parts)
    if parts < 1:
        raise ConfigError(f"micro_batches must be a positive number of parts, got {parts}")
    return parts


def micro_batched_call(call, model, inputs, parts):
    """``call(inputs)`` on ``parts`` consecutive slices of the batch, each rematerialised; the
    outputs are concatenated along the batch axis.

    ``call`` is ``model``'s training forward pass. Slices differ in size by at most one sample. Each
    part runs in a ``StatelessScope``: its variable updates (batch norm's moving statistics) are
    returned by the rematerialised function and assigned once outside it, so the recomputation
    in the backward pass does not update them again (and JAX sees no side effect inside
    ``jax.checkpoint``).
    """
    batch = ops.shape(inputs)[0]
    if isinstance(batch, int) and batch < parts:
        raise ConfigError(f"micro_batches={parts} needs at least {parts} samples per encoder call, got {batch}: "
                          "use fewer micro-batches or a larger batch")
    variables = model.variables
    updated = model.non_trainable_variables

    def run_part(x):
        def part(x):
            # The variables are read inside (TensorFlow's recompute_grad finds them there; JAX reads
            # the traced values of the enclosing step). A new function per part: JAX caches what it
            # traced per function, and the previous part has just updated the moving statistics.
            with keras.StatelessScope(state_mapping=[(v, v.value) for v in variables]) as scope:
                y = call(x)
            return [y] + [scope.get_current_value(v) for v in updated]

        return keras.remat(part)(x)

    outputs = []
    for k in range(parts):
        x = inputs[(k * batch) // parts:((k + 1) * batch) // parts, ...]
        if outputs and keras.backend.backend() == "tensorflow":
            x = _after(x, outputs[-1])
        y, *new_values = run_part(x)
        for variable, value in zip(updated, new_values):
            variable.assign(ops.stop_gradient(value))
        outputs.append(y)
    return ops.concatenate(outputs, axis=0)


def _after(x, previous):
    """``x`` unchanged, made to depend on ``previous``: the forward pass of a part waits for the part before
    it and, backwards, the part before waits for this part's gradient, so one part at a time holds its
    activations. Without it, TensorFlow's dataflow executor recomputes all parts at once as soon as the
    loss gradient is there (measured: exemplar 128^3 batch 2 in 4 parts, > 9 GB without, 6.3 GB with).
    JAX (XLA schedules one program) and PyTorch (eager) do not need it. The zero is data-dependent (NaN
    only if ``previous`` is), so no graph optimiser folds the dependency away."""
    m = ops.max(previous)
    return x + ops.cast(ops.where(m == m, 0.0, m), x.dtype)


def set_micro_batches(model, parts):
    """Set the number of micro-batches of every encoder in ``model`` (1: off); returns ``model``."""
    parts = check_micro_batches(parts)
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if hasattr(layer, "micro_batches"):
            layer.micro_batches = parts
    return model
