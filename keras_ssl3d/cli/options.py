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
REPEATS = click.IntRange(min=1)
WORKERS = click.IntRange(min=1, max=256)
CHANNELS = click.IntRange(min=1)
FIT_VERBOSITY = click.IntRange(min=0, max=2)
CHECKPOINT_EVERY = click.IntRange(min=1)
CHECKPOINT_SECONDS = click.FloatRange(min=0)
MICRO_BATCHES = click.IntRange(min=1)

from keras_ssl3d.names import AUGMENTATIONS, PRECISIONS  # noqa: E402


def augment_option(func):
    """``--augment``: mirroring / intensity augmentation of the training batches (never of validation)."""
    return click.option(
        "--augment", default="none", show_default=True, type=click.Choice(AUGMENTATIONS),
        help="Augment the training batches: `flip` mirrors image and label map along each axis (each with "
             "probability 1/2); `flip_intensity` also scales each channel by U(0.9, 1.1) and shifts it by "
             "U(-0.1, 0.1). Fixed by --seed, epoch and batch, so --resume sees the same batches.")(func)


def checkpoint_options(func):
    """``--checkpoint-every`` and ``--checkpoint-seconds``: how far apart a training command's checkpoints are."""
    func = click.option(
        "--checkpoint-seconds", default=0.0, show_default=True, type=CHECKPOINT_SECONDS, metavar="SECONDS",
        help="Least seconds between checkpoints (e.g. 60 on small data, where a checkpoint costs a good part "
             "of an epoch). The last epoch and Ctrl-C always save; a kill loses at most the epochs since the "
             "last checkpoint, which --resume repeats exactly.")(func)
    return click.option(
        "--checkpoint-every", default=1, show_default=True, type=CHECKPOINT_EVERY, metavar="EPOCHS",
        help="Least epochs between checkpoints (history.csv is written after every epoch).")(func)


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
