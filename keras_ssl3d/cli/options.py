"""The one range of every numeric CLI option, shared by all commands so the same name means the same rule.

click checks these before a command starts, so a bad value is a one-line usage error (exit 2) and never a
crash half-way through, nor a silent fallback to a default (``--size 0`` used to mean 128).
tests/test_cli_options.py walks every command and fails on a numeric option without a range, or on two
commands giving one option name different ranges.
"""

import click

EPOCHS = click.IntRange(min=1)
WARMUP_EPOCHS = click.IntRange(min=0)
BATCH_SIZE = click.IntRange(min=1)
LEARNING_RATE = click.FloatRange(min=0, max=1, min_open=True)
# A cube/square side: below 8 no encoder level fits; above 1024 a single volume outgrows any memory.
SIZE = click.IntRange(min=8, max=1024)
SEED = click.IntRange(min=0, max=2**31 - 1)
LABEL_FRACTION = click.FloatRange(min=0, max=1, min_open=True)
VAL_FRACTION = click.FloatRange(min=0, max=1, max_open=True)
# A study scores on held-out test subjects: it needs some, and subjects left to train on.
TEST_FRACTION = click.FloatRange(min=0, max=1, min_open=True, max_open=True)
OVERLAP = click.FloatRange(min=0, max=1, max_open=True)
REPEATS = click.IntRange(min=1)
WORKERS = click.IntRange(min=1, max=256)
CHANNELS = click.IntRange(min=1)
FIT_VERBOSITY = click.IntRange(min=0, max=2)

# = keras_ssl3d.training.precision.PRECISIONS (which imports Keras; a test keeps both in step).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def memory_options(what):
    """``--remat`` and ``--precision`` for a training command; ``what`` names the rematerialised blocks."""

    def decorate(func):
        func = click.option(
            "--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
            help="Keras dtype policy; the mixed ones are for GPUs/TPUs (emulated and slower on most CPUs).")(func)
        return click.option(
            "--remat", is_flag=True, default=False,
            help=f"3D: rematerialise the residual blocks of {what} (gradient checkpointing): same results, "
                 "less activation memory, slower steps (see README, Performance).")(func)

    return decorate


def tensorboard_option(func):
    """``--tensorboard DIR|none``: where a training command writes its TensorBoard logs."""
    return click.option(
        "--tensorboard", default=None, metavar="DIR|none",
        help="TensorBoard log folder (scalars per epoch) [default: OUT/tensorboard]; `none` writes no logs. "
             "View with `tensorboard --logdir OUT/tensorboard`.")(func)


def tensorboard_dir(value, run_dir):
    """The log folder ``--tensorboard`` asks for: None (off), the given DIR, or RUN/tensorboard by default."""
    from pathlib import Path

    if value is None:
        return Path(run_dir) / "tensorboard"
    if str(value).strip().lower() == "none":
        return None
    return Path(value)
