"""``keras-ssl3d predict``: label maps as NIfTI, in the geometry of each input scan."""

import click

from keras_ssl3d.cli import options


@click.command("predict")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="Run folder of `keras-ssl3d finetune` (or its model/ preset folder).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(), help="Output folder for <name>_pred.nii.gz files.")
@click.option("--batch-size", default=1, show_default=True, type=options.BATCH_SIZE)
@click.option("--overwrite", is_flag=True,
              help="Replace predictions an earlier predict wrote in OUT (never any other file).")
def predict(model_path, inputs, out, batch_size, overwrite):
    """Segment each INPUT and write OUT/<name>_pred.nii.gz.

    An INPUT is a NIfTI file (3D, or 4D with the channels last), comma-separated co-registered
    files (one per channel, in the model's channel order), or a subject folder holding
    <id>_<channel>.nii.gz files (BraTS style). The label map has the input file's shape and
    affine, and the original label values (BraTS 4 for enhancing tumour, not the cache's 3).
    The scan is resized to the model's input grid, as its training data were, so the model sees it
    in one window (there is no sliding-window overlap to choose).
    Only new files are written (recorded in OUT/keras-ssl3d-predictions.json): an existing file is
    refused unless an earlier predict wrote it and --overwrite is given; an input is never overwritten.
    """
    from pathlib import Path

    from keras_ssl3d.data import save_label_map
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.evaluation import (
        load_finetuned,
        plan_predictions,
        predict_volume,
        record_prediction,
        resolve_inputs,
    )

    model, metadata = load_finetuned(model_path)
    if metadata["task"] != "segmentation":
        raise ConfigError("predict writes label maps: the model is a 2D classifier; use `keras-ssl3d evaluate`")
    items = resolve_inputs(inputs, metadata.get("channel_names") or [])
    out = Path(out)
    for target, paths in plan_predictions(inputs, items, out, overwrite=overwrite):
        labels, reference = predict_volume(model, metadata, paths, batch_size=batch_size)
        record_prediction(out, target, written=False)
        save_label_map(labels, reference, target)
        record_prediction(out, target, written=True)
        values = ", ".join(str(v) for v in sorted(set(labels.ravel().tolist())))
        click.echo(f"{target}  shape {tuple(reference.original_shape)}  labels {{{values}}}")
