"""``keras-ssl3d predict``: label maps as NIfTI, in the geometry of each input scan."""

import click

from keras_ssl3d.cli import options


@click.command("predict")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="Run folder of `keras-ssl3d finetune` (or its model/ preset folder).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(), help="Output folder for <name>_seg.nii.gz files.")
@click.option("--batch-size", default=1, show_default=True, type=options.BATCH_SIZE)
def predict(model_path, inputs, out, batch_size):
    """Segment each INPUT and write OUT/<name>_seg.nii.gz.

    An INPUT is a NIfTI file (3D, or 4D with the channels last), comma-separated co-registered
    files (one per channel, in the model's channel order), or a subject folder holding
    <id>_<channel>.nii.gz files (BraTS style). The label map has the input file's shape and
    affine, and the original label values (BraTS 4 for enhancing tumour, not the cache's 3).
    The scan is resized to the model's input grid, as its training data were, so the model sees it
    in one window (there is no sliding-window overlap to choose).
    """
    from pathlib import Path

    from keras_ssl3d.data import save_label_map
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.evaluation import (
        PREDICTION_SUFFIX,
        load_finetuned,
        predict_volume,
        resolve_inputs,
    )

    model, metadata = load_finetuned(model_path)
    if metadata["task"] != "segmentation":
        raise ConfigError("predict writes label maps: the model is a 2D classifier; use `keras-ssl3d evaluate`")
    items = resolve_inputs(inputs, metadata.get("channel_names") or [])
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        duplicate = sorted(n for n in names if names.count(n) > 1)[0]
        raise ConfigError(f"two inputs would write the same output name: {duplicate}")
    out = Path(out)
    for name, paths in items:
        labels, reference = predict_volume(model, metadata, paths, batch_size=batch_size)
        target = out / f"{name}{PREDICTION_SUFFIX}"
        save_label_map(labels, reference, target)
        values = ", ".join(str(v) for v in sorted(set(labels.ravel().tolist())))
        click.echo(f"{target}  shape {tuple(reference.original_shape)}  labels {{{values}}}")
