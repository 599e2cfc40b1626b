"""``keras-ssl3d evaluate``: scores of a fine-tuned model (Dice per class / BraTS regions, kappa)."""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.streaming import cache_option


@click.command("evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="Run folder of `keras-ssl3d finetune` (or its model/ preset folder).")
@click.option("--data", "data_path", required=True, type=click.Path(), help="Labelled data set to evaluate on.")
@click.option("--out", default=None, type=click.Path(), help="Write the scores as JSON here (a new file, or an earlier score file, which is replaced).")
@click.option("--subjects", default="all", show_default=True, type=click.Choice(["all", "test", "val", "train"]),
              help="Evaluate every subject of --data, or only the run's held-out test (a study's runs) / "
                   "validation / training subjects.")
@click.option("--batch-size", default=1, show_default=True, type=options.BATCH_SIZE)
@cache_option
def evaluate(model_path, data_path, out, subjects, batch_size, cache):
    """Evaluate a fine-tuned model on labelled data and print a table.

    3D: hard Dice per class, BraTS regions (whole tumour, tumour core, enhancing) when the labels
    are BraTS, and the mean Dice without background, each averaged over subjects; a structure
    absent from both prediction and ground truth scores 1. HD95 and mean surface distance in mm
    (from the scans' voxel spacing) per BraTS region, else per class: 0 when a structure is absent
    from both, the volume's diagonal when from one (BraTS). 2D: quadratic-weighted kappa and
    accuracy. Volumes are scored on the model's input grid (resampled like the training data).
    """
    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.fileio import claim_output_file, write_json_atomic
    from keras_ssl3d.finetune.evaluation import (
        EVALUATION_TAG,
        evaluate_model,
        format_table,
        is_evaluation_file,
        load_finetuned,
        model_size,
    )

    from pathlib import Path

    if out:  # an earlier score file is replaced; any other file (an input, the user's) is refused, before any work
        claim_output_file(out, is_evaluation_file, "score file of evaluate")
    model, metadata = load_finetuned(model_path)
    run_dir = Path(model_path).resolve()
    run_dir = run_dir.parent if run_dir.name == "model" else run_dir
    data = load_task_data(data_path, size=model_size(metadata), task=metadata["task"], cache_dir=cache,
                          cache_root=run_dir.parent, echo=click.echo)
    result = evaluate_model(model, metadata, data, subjects=subjects, batch_size=batch_size)
    result["model"] = str(model_path)
    result["data"] = str(data_path)
    click.echo(format_table(result))
    if out:
        claim_output_file(out, is_evaluation_file, "score file of evaluate")
        write_json_atomic(out, {**EVALUATION_TAG, **result})
        click.echo(f"scores written to {out}")
