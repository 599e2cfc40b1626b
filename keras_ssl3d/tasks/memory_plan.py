"""Memory planner: parameters and peak memory of a 3D pretraining step, before anything is built.

Why: at 128^3 whether a step fits decides whether a run starts at all, and the user otherwise
learns it from an out-of-memory crash. The estimate is analytic, per encoder level:

    peak = runtime + parameter state + kept x (activations of the inputs held at once) + parts

* ``parameter state``: weights, gradients and Adam's two moments, 4 bytes each (float32 master
  weights also under mixed precision) = 16 bytes per parameter (``estimate_parameters`` is exact).
* ``activations of one input``: ``sum over levels of voxels x filters`` (an encoder input is a
  volume, a view or a patch; ``encoder_inputs`` says how many a task feeds per sample and their
  size), plus the U-Net decoder's levels for genesis/mae; x 4 bytes (fp32) or 3 (mixed).
* ``kept``: how many copies of that the backward pass holds per input (inputs of each
  convolution, normalisation and ReLU, then their gradients); smaller with ``remat``. With
  ``micro_batches = m`` only ``ceil(inputs / m)`` inputs' activations are held at a time.
* ``parts``: each micro-batch part beyond the first adds its inputs, outputs and re-run buffers.

The constants are fitted to the peak RSS of TensorFlow CPU fp32 steps at 64^3 and 128^3
(``benchmarks/memory128.jsonl``, ``benchmarks/results.jsonl``; errors per task in BENCHMARKS.md,
section "Memory planner"). On a GPU the runtime term is the framework's device reservation,
not its host libraries, and mixed precision is calibrated on one CPU point only (no GPU was
measured): the estimate there is the same arithmetic.
"""

import math
import re
from dataclasses import dataclass

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.names import FILTERS_3D as DEFAULT_FILTERS
from keras_ssl3d.training.budget import (  # noqa: F401  (exact counts, shared with the size check)
    conv_parameters,
    encoder_parameters,
    residual_block_parameters,
)

GB = 1e9
PARAM_STATE_BYTES = 16  # weight + gradient + Adam m + Adam v, float32

# Fitted to the measured peaks (see the module docstring and benchmarks/memory_plan_fit.py).
RUNTIME_BYTES = 0.93e9    # the framework and its libraries, resident before the first step
KEPT_NONE = 10.8          # copies of the per-level activations held for the backward pass
KEPT_REMAT = 9.6          # the same with every residual block rematerialised
MICRO_EXTRA = 0.65        # extra copies per additional micro-batch part (its inputs/outputs, the re-run)
DECODER_WEIGHT = 0.7      # a decoder level holds less than an encoder level (fitted to Genesis and MAE at 64^3)

# Mixed precision: 16-bit tensors plus the float32 copies normalisation computes in; one CPU point
# (rotation 64^3, mixed_bfloat16) measured, no GPU: an estimate, not a calibration.
MIXED_ELEMENT_BYTES = 3

# A setting fits when its estimate plus this margin does: the largest under-estimate among the
# measured peaks is 15 % (BENCHMARKS.md, "Memory planner").
SAFETY_MARGIN = 0.15
HOST_SHARE = 0.8          # --memory-budget auto on a CPU: this share of the available host memory


# ----------------------------------------------------------------------------- parameters

def decoder_parameters(filters=DEFAULT_FILTERS, out_channels=1, norm="batch"):
    """Exact parameter count of the restoration U-Net's decoder and 1x1 head (``Segmenter3D``)."""
    total, cin = 0, filters[-1]
    for width, skip in zip(reversed(filters[:-1]), reversed(filters[:-1])):
        total += conv_parameters(8, cin, width, True)  # Conv3DTranspose 2x2x2, stride 2
        total += residual_block_parameters(width + skip, width, norm, projection=False)
        cin = width
    return total + conv_parameters(1, filters[0], out_channels, True)


def _mlp(inputs, hidden, out):
    return inputs * hidden + hidden + hidden * out + out


def head_parameters(task, feature_width, options):
    """Parameters of a task's head on the encoder's ``feature_width`` pooled features (exact)."""
    o, f = options, int(feature_width)
    if task == "rotation":
        return _mlp(f, o["hidden_units"], 10)
    if task == "exemplar":
        return _mlp(f, o["hidden_units"], o["code_size"])
    if task == "simclr":
        return _mlp(f, o["hidden_units"] or f, o["projection_dim"])
    embed = f * o.get("embedding_dim", 0) + o.get("embedding_dim", 0)
    if task == "rpl":
        return embed + _mlp(2 * o["embedding_dim"], o["hidden_units"], o["grid"] ** 3 - 1)
    if task == "jigsaw":
        return embed + _mlp(o["grid"] ** 3 * o["embedding_dim"], o["hidden_units"], o["num_permutations"] or 1000)
    if task == "cpc":
        row, code = o["grid"] ** 2 * o["embedding_dim"], o["code_size"]
        gru = 3 * (row * code + code * code + 2 * code)               # Keras GRU, reset_after=True
        return embed + gru + o["steps"] * (code * row + row)
    return 0                                                          # genesis, mae: the decoder


SEGMENTATION = "segmentation"  # fine-tuning a U-Net (``Segmenter3D``), planned like a task
UNETS = ("genesis", "mae", SEGMENTATION)


def estimate_parameters(filters=DEFAULT_FILTERS, in_channels=1, task=None, norm="batch", task_options=None,
                        num_classes=None):
    """Parameters of the 3D encoder (and, with ``task``, its head or decoder): exact, nothing built.

    The check an absurd ``--filters`` needs before building (``8,16,100000`` is ~3e11 parameters).
    ``task="segmentation"``: the fine-tuning U-Net with ``num_classes`` outputs.
    """
    filters = tuple(int(f) for f in filters)
    total = encoder_parameters(filters, in_channels, norm)
    if task in UNETS:
        total += decoder_parameters(filters, num_classes or in_channels, norm)
    elif task is not None:
        total += head_parameters(task, filters[-1], task_hparams(task, task_options))
    return total


# ----------------------------------------------------------------------------- geometry

def task_hparams(task, task_options=None):
    """The task's constructor defaults, updated with ``task_options`` (``--task-option``)."""
    import inspect

    from keras_ssl3d.tasks import TASKS

    defaults = {name: p.default for name, p in inspect.signature(TASKS[task].__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **(task_options or {})}


def encoder_inputs(task, size, task_options=None):
    """``(inputs per sample, spatial size of each)``: what one sample feeds the task's encoder."""
    from keras_ssl3d.tasks.patches import grid_geometry

    volume = (int(size),) * 3
    if task == SEGMENTATION:
        return 1, volume
    o = task_hparams(task, task_options)
    if task in ("cpc", "jigsaw", "rpl"):
        try:
            _, patch = grid_geometry(volume, o["grid"], o["jitter"])
        except ValueError as e:
            raise ConfigError(f"{task} cannot be planned for --size {size}: {e}") from None
        return (2 if task == "rpl" else int(o["grid"]) ** 3), patch
    return (2 if task in ("exemplar", "simclr") else 1), volume


def level_elements(spatial, filters):
    """``sum over levels of voxels x filters`` of one encoder input (max-pooling floors odd sizes)."""
    total, shape = 0, tuple(int(s) for s in spatial)
    for level, f in enumerate(filters):
        if level:
            shape = tuple(s // 2 for s in shape)
        total += math.prod(shape) * f
    return total


def decoder_elements(spatial, filters):
    """The decoder's counterpart of ``level_elements`` (its levels run at the encoder's first four)."""
    shape, total = tuple(int(s) for s in spatial), 0
    for f in filters[:-1]:
        total += math.prod(shape) * f
        shape = tuple(s // 2 for s in shape)
    return DECODER_WEIGHT * total


# ----------------------------------------------------------------------------- estimate

@dataclass(frozen=True)
class Estimate:
    """One configuration's estimate, in bytes."""

    task: str
    size: int
    batch_size: int
    precision: str
    remat: bool
    micro_batches: int
    parameters: int
    inputs_per_step: int
    input_shape: tuple
    parameter_bytes: float
    activation_bytes: float
    runtime_bytes: float

    @property
    def peak_bytes(self):
        return self.runtime_bytes + self.parameter_bytes + self.activation_bytes

    @property
    def remedy(self):
        parts = (["--remat"] if self.remat else []) + (
            [f"--micro-batches {self.micro_batches}"] if self.micro_batches > 1 else [])
        return " ".join(parts) or "no remedy"

    def describe(self):
        shape = "x".join(map(str, self.input_shape))
        return (f"{self.task} {self.size}^3 batch {self.batch_size} {self.precision}, {self.remedy}: "
                f"~{self.peak_bytes / GB:.2f} GB peak ({self.parameters / 1e6:.2f} M parameters "
                f"{self.parameter_bytes / GB:.2f} GB with Adam, activations of {self.inputs_per_step} x {shape} "
                f"encoder inputs {self.activation_bytes / GB:.2f} GB, runtime {self.runtime_bytes / GB:.2f} GB)")


def estimate(task, size, batch_size, filters=DEFAULT_FILTERS, in_channels=1, norm="batch", precision="float32",
             remat=False, micro_batches=1, task_options=None, num_classes=None):
    """The peak memory of one training step of ``task`` (an ``Estimate``); ``task="segmentation"``:
    a fine-tuning step of the U-Net with ``num_classes`` outputs."""
    filters = tuple(int(f) for f in filters)
    per_sample, spatial = encoder_inputs(task, size, task_options)
    inputs = int(batch_size) * per_sample
    parts = max(1, min(int(micro_batches), inputs))
    kept_inputs = math.ceil(inputs / parts)
    one = level_elements(spatial, filters)
    if task in UNETS:
        one += decoder_elements(spatial, filters)
    element_bytes = MIXED_ELEMENT_BYTES if precision.startswith("mixed") else 4
    kept = KEPT_REMAT if remat else KEPT_NONE
    copies = kept * kept_inputs + MICRO_EXTRA * (parts - 1)
    parameters = estimate_parameters(filters, in_channels, task, norm, task_options, num_classes)
    return Estimate(task=task, size=int(size), batch_size=int(batch_size), precision=precision, remat=bool(remat),
                    micro_batches=parts, parameters=parameters, inputs_per_step=inputs, input_shape=tuple(spatial),
                    parameter_bytes=float(PARAM_STATE_BYTES * parameters),
                    activation_bytes=float(copies * one * element_bytes), runtime_bytes=RUNTIME_BYTES)


def candidates(inputs_per_step, remat=False, micro_batches=1, micro_allowed=True):
    """Remedies from the cheapest to the most frugal, none weaker than what the user asked for.

    Measured step-time costs (BENCHMARKS.md, interleaved): remat x1.3, micro2 x1.5, micro4 x1.6.
    """
    micro_choices = {1, int(micro_batches)}
    if micro_allowed:
        micro_choices |= {m for m in (2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256) if m <= inputs_per_step}
        micro_choices.add(inputs_per_step)
    out = []
    for m in sorted(micro_choices):
        if m < micro_batches:
            continue
        for r in (False, True):
            if r or not remat:
                out.append((r, m))
    return out


def plan(task, size, batch_size, budget_bytes, filters=DEFAULT_FILTERS, in_channels=1, norm="batch",
         precision="float32", remat=False, micro_batches=1, task_options=None, micro_allowed=True, num_classes=None):
    """The cheapest ``Estimate`` that fits ``budget_bytes`` with ``SAFETY_MARGIN``; a ``ConfigError``
    (one line) when none does."""
    def at(r, m):
        return estimate(task, size, batch_size, filters, in_channels, norm, precision, r, m, task_options, num_classes)

    best = None
    for r, m in candidates(at(remat, micro_batches).inputs_per_step, remat, micro_batches, micro_allowed):
        e = at(r, m)
        best = e if best is None or e.peak_bytes < best.peak_bytes else best
        if e.peak_bytes * (1 + SAFETY_MARGIN) <= budget_bytes:
            return e
    raise ConfigError(f"--memory-budget {budget_bytes / GB:.2f} GB: nothing fits; the most frugal setting needs "
                      f"{best.describe()} (+ {SAFETY_MARGIN:.0%} margin); lower --batch-size or --size, or use "
                      "--filters with fewer channels")


# ----------------------------------------------------------------------------- budget

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1e9, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "ki": 2 ** 10, "kib": 2 ** 10, "mi": 2 ** 20, "mib": 2 ** 20, "gi": 2 ** 30, "gib": 2 ** 30,
          "ti": 2 ** 40, "tib": 2 ** 40}


def parse_size(text, option="--memory-budget"):
    """``"8GB"``, ``"7.5 GiB"``, ``"512MB"`` (a bare number is GB) -> bytes."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"{option} {text!r}: give auto or a size such as 8GB, 7.5GiB or 512MB")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if value <= 0:
        raise ConfigError(f"{option} {text!r}: the budget must be more than 0")
    return value


def free_accelerator_bytes():
    """Free memory of the first GPU from ``nvidia-smi`` (any backend), or None when none is visible."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
        return float(out[0]) * 2 ** 20 if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def available_host_bytes():
    """``MemAvailable`` of /proc/meminfo (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def resolve_budget(text):
    """``(bytes, where from)`` for ``--memory-budget auto|SIZE``."""
    if str(text).strip().lower() != "auto":
        return parse_size(text), "given"
    free = free_accelerator_bytes()
    if free is not None:
        return free, "auto: the GPU's free memory (nvidia-smi)"
    host = available_host_bytes()
    return HOST_SHARE * host, (f"auto: {HOST_SHARE:.0%} of the host's available memory ({host / GB:.1f} GB), "
                               "no GPU visible")


def choose(budget_text, task, size, batch_size, **kwargs):
    """``(Estimate, one line saying what was chosen and why)`` for ``--memory-budget``."""
    budget, source = resolve_budget(budget_text)
    chosen = plan(task, size, batch_size, budget, **kwargs)
    return chosen, (f"Memory budget {budget / GB:.2f} GB ({source}): {chosen.remedy} "
                    f"(estimated peak {chosen.peak_bytes / GB:.2f} GB + {SAFETY_MARGIN:.0%} margin; the cheapest "
                    "setting that fits)")
