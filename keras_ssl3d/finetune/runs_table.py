"""A study's ``runs.csv``: one row per fine-tuning run (its settings, test scores, surface distances and
convergence), written atomically after every run so an interrupted study keeps what it has."""

import csv
import io

from keras_ssl3d.fileio import write_text_atomic
from keras_ssl3d.finetune.convergence import RUN_COLUMNS as CONVERGENCE_COLUMNS

RUNS_FILE = "runs.csv"
# Surface distances on the test subjects in mm (`keras_ssl3d.finetune.surface`): HD95 and the mean surface
# distance, averaged over the structures (BraTS regions, else foreground classes), then per BraTS region.
SURFACE_COLUMNS = ["hd95", "msd", "hd95_whole_tumor", "hd95_tumor_core", "hd95_enhancing_tumor",
                   "msd_whole_tumor", "msd_tumor_core", "msd_enhancing_tumor"]
COLUMNS = ["encoder", "label", "strategy", "warmup_epochs", "fraction", "used_fraction", "repeat", "seed",
           "train_size", "val_size", "test_size",
           "score", "score_name", "whole_tumor", "tumor_core", "enhancing_tumor", "final_val_metric",
           "best_val_metric", "selected_epoch", "epochs", "wall_s", "run_dir", *SURFACE_COLUMNS,
           *CONVERGENCE_COLUMNS]


def run_row(label, handle, fraction, repeat, result, wall, run_dir, pool_size=None):
    """One ``runs.csv`` row of a finished run (its ``result.json`` with the test evaluation in it)."""
    from keras_ssl3d.finetune.convergence import run_columns as convergence_columns
    from keras_ssl3d.finetune.warmup import effective_warmup

    evaluation = result.get("evaluation") or {}
    train_size = result.get("train_size")
    task = result.get("task")
    score_name = "mean_dice" if task == "segmentation" else "kappa"
    regions = evaluation.get("regions") or {}
    surface = {"hd95": evaluation.get("mean_hd95"), "msd": evaluation.get("mean_msd")}
    for metric in ("hd95", "msd"):
        for region in ("whole_tumor", "tumor_core", "enhancing_tumor"):
            surface[f"{metric}_{region}"] = (evaluation.get(metric) or {}).get(region)
    return {
        "encoder": handle, "label": label, "strategy": (result.get("config") or {}).get("strategy"),
        "warmup_epochs": effective_warmup(result.get("config") or {}),
        "fraction": float(fraction),  # as asked; a label subset has at least one subject:
        "used_fraction": round(train_size / pool_size, 6) if train_size and pool_size else None,
        "repeat": int(repeat), "seed": int(repeat),
        "train_size": result.get("train_size"), "val_size": result.get("val_size"),
        "test_size": result.get("test_size"),
        "score": evaluation.get(score_name), "score_name": score_name,
        "whole_tumor": regions.get("whole_tumor"), "tumor_core": regions.get("tumor_core"),
        "enhancing_tumor": regions.get("enhancing_tumor"),
        "final_val_metric": result.get("final_score"), "best_val_metric": result.get("best_score"),
        "selected_epoch": result.get("selected_epoch"), "epochs": len(result.get("curve") or []),
        "wall_s": None if wall is None else round(float(wall), 2),
        "run_dir": str(run_dir),
        **surface,
        **convergence_columns(result),
    }


def write_runs_csv(path, rows, columns=COLUMNS):
    """``rows`` as CSV (``columns``; None as an empty cell), written atomically; also a study's probes.csv."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text_atomic(path, buffer.getvalue())
