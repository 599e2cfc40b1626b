"""Encoder warm-up (paper): freeze the pretrained encoder for the first N epochs, then unfreeze.

While the randomly initialised decoder/classifier is trained, gradients through a frozen
encoder cannot damage its pretrained representations. The paper uses 25 warm-up epochs for 3D
segmentation and 5 for 2D classification, and compares three strategies:

- ``frozen``: the encoder never trains;
- ``warmup``: frozen for ``warmup_epochs``, then trained with everything else (paper default);
- ``full``: everything trains from the first step.

What stays frozen: the encoder (paper), or with ``--warmup-freezes pretrained`` (``apply_strategy(...,
pretrained_decoder=True)``) a Genesis/MAE preset's pretrained decoder too, so that only the fresh output layer
trains at first (docs/transfer.md, factor (f), measures both; its decoder's batch norm is then fixed as well).

`EncoderWarmup` switches inside one ``fit`` call on TensorFlow, JAX and PyTorch. In Keras 3 a
change of ``trainable`` after the train function was built is not picked up by itself:

- TensorFlow traces ``model.trainable_variables`` into its ``tf.function``; JAX jits a function
  of the trainable/non-trainable state lists. The callback rebuilds the train function
  (``make_train_function(force=True)``) whenever the trainable set changes.
- The optimizer holds one slot per variable it was built with, and the JAX trainer requires it
  to be built on exactly the current trainable variables. The callback therefore rebuilds the
  optimizer (same config) for the new trainable set and copies the state of the variables it
  already tracked (iterations, decoder moments); the newly trainable encoder weights start with
  zero moments, as they would in a fresh optimizer. The switch happens at the start of an epoch,
  where every backend re-reads the model state.

While frozen, the encoder's batch-norm layers run in inference mode (Keras 3 semantics of
``trainable=False`` for `BatchNormalization`): they normalise with the pretrained moving
statistics and do not update them, so the frozen encoder is a fixed function.
"""

import math

import keras

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import FINETUNE_STRATEGIES as STRATEGIES  # noqa: E402
from keras_ssl3d.names import WARMUP_FREEZES  # noqa: E402
from keras_ssl3d.names import FINETUNE_WARMUP_EPOCHS as PAPER_WARMUP  # noqa: E402


class EncoderWarmup(keras.callbacks.Callback):
    """Keep ``encoder`` (and ``decoder``, if given) frozen for epochs ``0 .. warmup_epochs - 1``, trainable afterwards.

    ``warmup_epochs=None`` keeps them frozen for the whole run (the ``frozen`` strategy). Epochs are
    the absolute epoch indices ``fit`` reports, so a resumed run (``initial_epoch``) continues the
    schedule where it stopped.
    """

    def __init__(self, encoder, warmup_epochs, decoder=None):
        super().__init__()
        if warmup_epochs is not None and (int(warmup_epochs) != warmup_epochs or warmup_epochs < 0):
            raise ConfigError(f"warmup_epochs must be a non-negative integer, got {warmup_epochs!r}")
        self.encoder = encoder
        self.frozen_layers = [encoder] + ([] if decoder is None else [decoder])
        self.warmup_epochs = math.inf if warmup_epochs is None else int(warmup_epochs)
        self.unfrozen_at = None

    def frozen_at(self, epoch):
        return epoch < self.warmup_epochs

    def set_frozen(self, frozen):
        for layer in self.frozen_layers:
            layer.trainable = not frozen

    def on_train_begin(self, logs=None):
        self._sync()

    def on_epoch_begin(self, epoch, logs=None):
        frozen = self.frozen_at(epoch)
        if self.encoder.trainable == frozen:
            self.set_frozen(frozen)
            if not frozen:
                self.unfrozen_at = epoch
        self._sync()

    def _sync(self):
        sync_trainable_state(self.model)


def apply_strategy(model, strategy="warmup", warmup_epochs=25, initial_epoch=0, pretrained_decoder=False):
    """Prepare ``model`` (which has an ``.encoder``) for a strategy; returns the ``fit`` callbacks.

    ``pretrained_decoder``: the model's ``.decoder`` is pretrained too and is frozen with the encoder
    (``--warmup-freezes pretrained`` on a Genesis / MAE preset). Call it before ``compile`` so the optimizer
    is first built on the right variables. A resumed run passes the epoch it restarts at, so the frozen
    layers start in the state of that epoch (and a checkpoint's optimizer state is restored onto the right
    variables).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown fine-tuning strategy {strategy!r}; choose one of {STRATEGIES}")
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"{type(model).__name__} has no .encoder to freeze")
    decoder = getattr(model, "decoder", None) if pretrained_decoder else None
    if pretrained_decoder and decoder is None:
        raise ConfigError(f"{type(model).__name__} has no .decoder to freeze")
    callback = EncoderWarmup(encoder, None if strategy == "frozen" else warmup_epochs, decoder=decoder)
    if strategy == "full" or (strategy == "warmup" and int(warmup_epochs) == 0):
        callback.set_frozen(False)
        return []
    callback.set_frozen(callback.frozen_at(int(initial_epoch)))
    return [callback]


def check_warmup_freezes(freezes):
    if freezes not in WARMUP_FREEZES:
        raise ConfigError(f"--warmup-freezes must be one of {WARMUP_FREEZES}, got {freezes!r}")


def sync_trainable_state(model):
    """Make the optimizer and train function of a compiled ``model`` match its trainable variables."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    trainable = list(model.trainable_variables)
    if optimizer.built:
        known = [id(v) for v in optimizer._trainable_variables]  # Keras 3 optimizer bookkeeping
        if known == [id(v) for v in trainable]:
            return
        model.optimizer = _rebuilt_optimizer(optimizer, trainable)
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def _rebuilt_optimizer(old, trainable):
    """A fresh optimizer of the same config built on ``trainable``, carrying over the old state."""
    new = type(old).from_config(old.get_config())
    new.build(trainable)
    # Optimizer variables are named after the model variable they belong to (plus a slot name),
    # and both optimizers create them in model-variable order: match the k-th variable of each name.
    old_by_name = {}
    for v in old.variables:
        old_by_name.setdefault(v.name, []).append(v)
    seen = {}
    for v in new.variables:
        k = seen.get(v.name, 0)
        seen[v.name] = k + 1
        candidates = old_by_name.get(v.name, [])
        if k < len(candidates) and tuple(candidates[k].shape) == tuple(v.shape):
            v.assign(candidates[k])
    return new


def default_warmup(task, strategy, epochs):
    """The paper's warm-up (25 epochs 3D, 5 2D), or a quarter of ``epochs`` when the run is not longer than that.

    The paper's warm-up in a shorter run would keep the encoder frozen throughout (``--strategy frozen`` in
    disguise); an explicit ``--warmup-epochs`` that long is refused instead (`FinetuneSettings.check`).
    """
    paper = PAPER_WARMUP[task]
    return paper if strategy != "warmup" or paper < int(epochs) else int(epochs) // 4


def warmup_note(task, settings, pretrained=None):
    """A line saying the warm-up of a pretrained encoder was shortened to fit the run, or None.

    ``pretrained``: True where ``settings.encoder`` is not yet the encoder (a study's settings).
    """
    s = settings.resolved(task)
    if settings.warmup_epochs is not None or s.strategy != "warmup" or s.warmup_epochs == PAPER_WARMUP[task] \
            or (pretrained is None and str(s.encoder).lower() == "none"):
        return None
    return (f"Warm-up: {s.warmup_epochs} epoch(s), a quarter of --epochs {s.epochs} (the paper's "
            f"{PAPER_WARMUP[task]} would keep the pretrained encoder frozen for the whole run); "
            "set --warmup-epochs to choose")


def effective_warmup(config):
    """Epochs a run's encoder is frozen, from its recorded config: 0 (full), its warm-up, or all (frozen)."""
    strategy = config.get("strategy")
    if strategy == "full":
        return 0
    if strategy == "frozen":
        return config.get("epochs")
    return config.get("warmup_epochs")
