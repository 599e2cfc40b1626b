"""``keras-ssl3d study``: data-efficiency and convergence study, pretrained encoders vs scratch."""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.convergence_options import convergence_options, speed_fraction_option
from keras_ssl3d.cli.distribution import distribution_options
from keras_ssl3d.cli.streaming import cache_option, workers_option
from keras_ssl3d.cli.transfer_options import transfer_options
from keras_ssl3d.names import FINETUNE_STRATEGIES, NORMALIZATIONS


@click.command("study")
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled data set (3D or 2D).")
@click.option("--encoders", required=True, help="Comma-separated pretrained encoders (preset folders, run "
              "folders, zoo names), each optionally named NAME=PATH (default name: the run folder for "
              "RUN/encoder, else the last path part); the scratch baseline always runs as well.")
@click.option("--fractions", default="0.05,0.1,0.25,0.5,1", show_default=True,
              help="Comma-separated fractions of the labelled training subjects.")
@click.option("--repeats", default=3, show_default=True, type=options.REPEATS, help="Label subsets per fraction (seeds 0..R-1).")
@click.option("--out", required=True, type=click.Path(), help="Study folder (runs/, runs.csv, PNGs, summary.md).")
@click.option("--epochs", "--max-epochs", "epochs", default=100, show_default=True, type=options.EPOCHS,
              help="Epochs per run (the maximum with --patience).")
@convergence_options
@transfer_options
@speed_fraction_option
@click.option("--batch-size", default=2, show_default=True, type=options.BATCH_SIZE)
@click.option("--lr", default=None, type=options.LEARNING_RATE, help="Adam learning rate [paper: 1e-5 for 3D, 5e-5 for 2D].")
@click.option("--strategy", default="warmup", show_default=True, type=click.Choice(FINETUNE_STRATEGIES),
              help="For the pretrained encoders; the scratch baseline always trains fully (full).")
@click.option("--warmup-epochs", default=None, type=options.WARMUP_EPOCHS, help="Warm-up epochs [paper: 25 for 3D, 5 for 2D].")
@click.option("--size", default=None, type=options.SIZE, help="Input size [128 3D, 224 2D].")
@click.option("--filters", default=None, help="Scratch encoder widths (default: those of the first pretrained "
              "encoder, so both have the same architecture).")
@click.option("--norm", default=None, type=click.Choice(NORMALIZATIONS),
              help="Scratch encoder normalisation (default: the first pretrained encoder's).")
@click.option("--test-fraction", default=0.2, show_default=True, type=options.TEST_FRACTION,
              help="Subjects held out for the scores (chosen by --split-seed only): no run trains or selects "
                   "its epoch on them.")
@click.option("--val-fraction", default=0.2, show_default=True, type=options.VAL_FRACTION,
              help="Of the subjects left after the test split: the per-epoch curve and best-epoch selection.")
@click.option("--split-seed", default=0, show_default=True, type=options.SEED)
@click.option("--loss", default="dice_ce", show_default=True, type=click.Choice(["dice_ce", "dice", "ce"]))
@options.augment_option
@cache_option
@workers_option
@distribution_options
@click.option("--parallel-runs", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Train N runs at once, each in its own process with a share of the cores (CPU machines with "
                   "more cores than one run keeps busy; on 2 cores it was not reliably faster, and on one GPU the "
                   "processes would share its memory). The same runs, read in the same order; their numbers match "
                   "one run at a time up to the thread count's floating-point rounding.")
@click.option("--probe-epochs", default=0, show_default=True, type=click.IntRange(min=0),
              help="3D: after each label subset's runs, train a frozen-encoder probe head for this many epochs (of "
                   "--steps-per-epoch steps, as the runs') on "
                   "every pretrained encoder, a random one and the scratch-trained one (OUT/probes.csv, a "
                   "summary section paired against the random encoder); 0: no probe.")
@click.option("--verbose", default=0, show_default=True, type=options.FIT_VERBOSITY, help="Keras fit verbosity.")
def study(data_path, encoders, fractions, repeats, out, epochs, patience, min_epochs, lr_schedule, steps_per_epoch,
          encoder_lr_scale, lr_warmup_epochs, decoder, warmup_freezes,
          speed_fraction, batch_size, lr, strategy, warmup_epochs, size,
          filters, norm, test_fraction, val_fraction, split_seed, loss, augment, cache, workers,
          distribute_strategy, devices, parallel_runs, probe_epochs,
          verbose):
    """Fine-tune every encoder (and scratch) on every label fraction, REPEATS times.

    Label subsets are fixed by seed and identical across encoders; finished runs are reused when
    the command is run again. Scores are on held-out test subjects; each run keeps its best
    validation epoch; scratch always trains fully (--strategy applies to pretrained encoders).
    Per fraction, each pretrained encoder is compared with scratch on the same subsets (mean
    difference, sd, 95 % bootstrap interval, verdict). Writes OUT/runs.csv, OUT/data_efficiency.png,
    OUT/convergence.png and OUT/summary.md; with --probe-epochs N also OUT/probes.csv (frozen-encoder probes).
    """
    from pathlib import Path

    from keras_ssl3d import distribute
    from keras_ssl3d.finetune.parsing import parse_float_list, parse_int_list, parse_name_list
    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.fileio import claim_output_dir
    from keras_ssl3d.finetune.model import load_encoder
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study import SCRATCH, STUDY_OUTPUT, run_study, split_encoder_spec

    claim_output_dir(out, STUDY_OUTPUT, option="--out")  # before any data is read or cached

    encoder_list = parse_name_list(encoders, "--encoders")
    fraction_list = parse_float_list(fractions, "--fractions")
    filter_list = parse_int_list(filters, "--filters")
    settings = FinetuneSettings(epochs=epochs, batch_size=batch_size, lr=lr, strategy=strategy,
                                warmup_epochs=warmup_epochs, val_fraction=val_fraction, split_seed=split_seed,
                                filters=filter_list, norm=norm or "batch", loss=loss, augment=augment,
                                test_fraction=test_fraction, patience=patience, lr_schedule=lr_schedule,
                                steps_per_epoch=steps_per_epoch, encoder_lr_scale=encoder_lr_scale,
                                lr_warmup_epochs=lr_warmup_epochs, decoder=decoder, min_epochs=min_epochs,
                                warmup_freezes=warmup_freezes)
    settings.check()
    plan = distribute.plan(distribute_strategy, devices)
    probe = None
    if probe_epochs:
        from keras_ssl3d.data.labelled import detect_task
        from keras_ssl3d.finetune.probe import ProbeSettings
        from keras_ssl3d.finetune.study_probe import check_probe_task

        check_probe_task(detect_task(data_path))  # before any data is read or cached
        probe = ProbeSettings(epochs=probe_epochs, batch_size=batch_size, loss=loss, steps_per_epoch=steps_per_epoch)
    data = load_task_data(data_path, size=size, cache_dir=cache, cache_root=Path(out).parent, workers=workers,
                          echo=click.echo)
    pretrained = [split_encoder_spec(e)[1] for e in encoder_list if e != SCRATCH]
    if pretrained and data.task == "segmentation" and (filter_list is None or norm is None):
        reference = load_encoder(pretrained[0], 3)
        settings.filters = filter_list or tuple(reference.filters)
        settings.norm = norm or reference.norm
    rows = run_study(data, encoder_list, fraction_list, repeats, settings, out, verbose=verbose, log=click.echo,
                     workers=workers, plan=plan, speed_fraction=speed_fraction, probe=probe,
                     parallel_runs=parallel_runs)
    click.echo((Path(out) / "summary.md").read_text(encoding="utf-8"))
    click.echo(f"{len(rows)} runs; see {out}/runs.csv, data_efficiency.png, convergence.png")
