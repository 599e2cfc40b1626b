"""``--patience`` and ``--lr-schedule`` (finetune, study) and ``--speed-fraction`` (study): converged comparisons.

See `keras_ssl3d.finetune.convergence`. Kept apart from the commands so both share one wording and range.
"""

import click

PATIENCE = click.IntRange(min=1)
SPEED_FRACTION = click.FloatRange(min=0, max=1, min_open=True)
# = keras_ssl3d.finetune.convergence.LR_SCHEDULES (a test keeps both in step)
LR_SCHEDULES = ("constant", "poly")


def convergence_options(func):
    """``--patience N``, ``--min-epochs N``, ``--lr-schedule constant|poly`` and ``--steps-per-epoch N``."""
    func = click.option(
        "--steps-per-epoch", default=None, type=click.IntRange(min=1), metavar="STEPS",
        help="Pass over the labelled subjects (shuffled) as many whole times per epoch as give about this many "
             "steps (nnU-Net: 250), so that few labels do not make one-step epochs. [default: one pass]")(func)
    func = click.option(
        "--min-epochs", default=0, show_default=True, type=click.IntRange(min=0), metavar="EPOCHS",
        help="With --patience: the first EPOCHS never count as epochs without improvement (a pretrained encoder "
             "can peak early on a few validation subjects; see docs/transfer.md).")(func)
    func = click.option(
        "--lr-schedule", default="constant", show_default=True, type=click.Choice(LR_SCHEDULES),
        help="Learning rate per epoch: constant, or nnU-Net's poly decay lr * (1 - epoch/epochs)^0.9 "
             "(--epochs is the maximum).")(func)
    return click.option(
        "--patience", default=None, type=PATIENCE, metavar="EPOCHS",
        help="Train until the validation score has not improved for this many epochs (warm-up epochs do "
             "not count), at most --epochs; run.json/result.json record converged: true, or false when "
             "--epochs came first. Needs validation subjects. [default: train all --epochs]")(func)


def speed_fraction_option(func):
    """``--speed-fraction``: the study's convergence-speed target, a fraction of scratch's converged score."""
    return click.option(
        "--speed-fraction", default=0.9, show_default=True, type=SPEED_FRACTION,
        help="Convergence speed: training steps until a run's validation curve first reaches this fraction of "
             "the scratch arm's converged (selected-epoch) validation score on the same label subset.")(func)
