"""``keras-ssl3d probe``: a frozen-encoder probe, beside the same probe on a random encoder of its architecture."""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.streaming import cache_option, workers_option


@click.command("probe")
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled 3D data set or cache.")
@click.option("--encoder", required=True, help="Encoder to probe: preset folder, .keras file, run folder, zoo "
              "name; `none`/`random`: a fresh encoder from --filters/--norm.")
@click.option("--out", required=True, type=click.Path(), help="Folder for probe.json (new, empty or a probe's).")
@click.option("--random/--no-random", "with_random", default=True, show_default=True,
              help="Also probe a randomly initialised encoder of the same architecture (seed fixed).")
@click.option("--scratch", "scratch_runs", multiple=True, metavar="RUN",
              help="Also probe the encoder of this scratch-trained `finetune` run (repeatable).")
@click.option("--label-fraction", default=1.0, show_default=True, type=options.LABEL_FRACTION,
              help="Fraction of the training subjects whose labels train the head (chosen by --seed).")
@click.option("--epochs", default=20, show_default=True, type=options.EPOCHS, help="Epochs of the head.")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1), metavar="STEPS",
              help="Each epoch passes over the labelled subjects as many whole (shuffled) times as give about "
                   "STEPS steps, as finetune's (fewer, longer epochs: less per-epoch cost). Default: one pass.")
@click.option("--batch-size", default=2, show_default=True, type=options.BATCH_SIZE)
@click.option("--lr", default=1e-3, show_default=True, type=options.LEARNING_RATE, help="Adam lr of the head.")
@click.option("--seed", default=0, show_default=True, type=options.SEED,
              help="Seed of the label subset, the head's init and the random encoder.")
@click.option("--split-seed", default=0, show_default=True, type=options.SEED)
@click.option("--test-fraction", default=0.2, show_default=True, type=options.TEST_FRACTION,
              help="Held-out subjects the probe is scored on (chosen by --split-seed only, as in `study`).")
@click.option("--val-fraction", default=0.2, show_default=True, type=options.VAL_FRACTION,
              help="Of the rest: never trained on (as in `finetune`/`study`).")
@click.option("--size", default=None, type=options.SIZE, help="Input cube side [128].")
@click.option("--filters", default=None, help="With --encoder none/random: encoder widths, e.g. 32,64,128,256,512.")
@click.option("--norm", default="batch", show_default=True, type=click.Choice(["batch", "group", "instance", "none"]),
              help="With --encoder none/random: normalisation.")
@cache_option
@workers_option
def probe(data_path, encoder, out, with_random, scratch_runs, label_fraction, epochs, steps_per_epoch, batch_size, lr,
          seed, split_seed, test_fraction, val_fraction, size, filters, norm, cache, workers):
    """Train a light head (1x1x1 convolutions per level, upsampled and summed) on a FROZEN encoder.

    Scores (mean Dice on held-out subjects) say what the encoder's features already separate, beside the
    same probe on a random encoder of the same architecture and on scratch-trained encoders. Writes
    OUT/probe.json.
    """
    from pathlib import Path

    from keras_ssl3d.fileio import claim_output_dir
    from keras_ssl3d.finetune.parsing import parse_int_list
    from keras_ssl3d.finetune.probe import (FRESH, PROBE_OUTPUT, ProbeSettings, load_probe_encoder, random_like,
                                            run_probe, score_line, write_probe)
    from keras_ssl3d.data.labelled import detect_task, load_task_data
    from keras_ssl3d.finetune.model import load_encoder

    claim_output_dir(out, PROBE_OUTPUT, option="--out")  # before any data is read or cached
    filter_list = parse_int_list(filters, "--filters")
    settings = ProbeSettings(label_fraction=label_fraction, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction,
                             steps_per_epoch=steps_per_epoch)
    settings.check()
    if detect_task(data_path) != "segmentation":
        raise click.UsageError("--data: the probe needs 3D segmentation data (volumes with label maps)")
    fresh = str(encoder).lower() in FRESH
    # encoders are loaded before the data are read (and cached): a wrong handle leaves nothing behind
    loaded = encoder if fresh else load_encoder(encoder, 3)
    scratch = [(f"scratch {_name(run)}", load_encoder(run, 3)) for run in scratch_runs]
    data = load_task_data(data_path, size=size, cache_dir=cache, cache_root=Path(out).parent, workers=workers,
                          echo=click.echo)
    probed = load_probe_encoder(loaded, data, filter_list, norm, seed=seed)
    jobs = [("random" if fresh else _name(encoder), probed)]
    if with_random and not fresh:
        jobs.append(("random", random_like(probed, seed)))
    jobs += [(name, load_probe_encoder(model, data)) for name, model in scratch]
    results = []
    for name, model in jobs:
        results.append(run_probe(data, model, settings, name=name))
        write_probe(out, results, settings)
        click.echo(score_line(results[-1]))


def _name(handle):
    from keras_ssl3d.finetune.study import encoder_label

    return encoder_label(str(handle))
