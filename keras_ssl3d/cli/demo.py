"""``keras-ssl3d demo``: the whole job (synthetic data, pretraining, fine-tuning, evaluation) in minutes."""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.names import TASK_NAMES

TASK_CHOICES = (*TASK_NAMES, "all")
DEFAULT_TASK = "exemplar"  # = keras_ssl3d.demo.DEFAULT_TASK (not imported: --help stays Keras-free)


@click.command("demo")
@click.option("--task", type=click.Choice(TASK_CHOICES), default=DEFAULT_TASK, show_default=True,
              help="Pretext task to pretrain with (all: every task, one after the other; several times as long).")
@click.option("--out", type=click.Path(), default="keras-ssl3d-demo", show_default=True,
              help="Output folder (data, runs, study, report.md): new or empty, or a previous demo's with "
                   "--overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo's outputs in OUT (never anything else).")
@click.option("--quick", is_flag=True, help="Start from the bundled demo-brats-TASK preset instead of pretraining, "
              "fewer label subsets, shorter patience: a few minutes on 2 CPU cores.")
@click.option("--seed", type=options.SEED, default=0, show_default=True,
              help="Seed of the data, label subsets, initialisations and batch order.")
@click.option("--verbose", type=options.FIT_VERBOSITY, default=0, show_default=True, help="Keras fit verbosity.")
def demo(task, out, quick, seed, verbose, overwrite):
    """Show what self-supervised pretraining buys when labels are scarce, on built-in synthetic data.

    Writes synthetic BraTS-like NIfTI subjects (an unlabelled pool and a labelled set), pretrains a small
    encoder with TASK on the pool (--quick downloads nothing and starts from the bundled preset instead),
    then runs the library's study on the labelled set: the pretrained U-Net and one from scratch on the same
    label subsets, each trained until its validation score stops improving, scored on held-out subjects,
    with the paired difference to scratch (mean, sd, 95 % bootstrap interval, verdict) of the test Dice and
    of the convergence speed, the frozen-encoder probe (pretrained vs random vs scratch-trained encoder), and
    the pretext task's held-out accuracy next to chance.
    OUT/report.md, OUT/results.json and OUT/study/ hold the details. No data or network needed.
    """
    from keras_ssl3d.demo import format_summary, run_demo

    results = run_demo(task=task, out=out, quick=quick, seed=seed, verbose=verbose,
                       log=lambda s: click.echo(s, err=True), overwrite=overwrite)
    click.echo("")
    click.echo(format_summary(results, out))
    click.echo(f"Report: {out}/report.md   study: {out}/study/ ({results['seconds']:.0f} s)")
