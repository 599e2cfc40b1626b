"""Data-efficiency and convergence studies: pretrained encoders vs training from scratch.

For every encoder (the scratch baseline ``none`` always included), label fraction and repeat,
one fine-tuning run is trained. Repeat ``r`` uses seed ``r`` for the label subset, so the
subsets are identical across encoders (and nested across fractions); the validation split is
fixed by ``split_seed`` for the whole study. Finished runs (``result.json``) are reused, so an
interrupted study continues where it stopped.

Outputs (all written atomically, refreshed after every run): ``runs.csv`` (one row per run), ``data_efficiency.png``
(score vs % of labels, mean and min-max spread over repeats), ``convergence.png`` (validation
score vs epoch) and ``summary.md``.
"""

import csv
import io
import json
import re
import time
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.fileio import atomic_path, write_text_atomic

SCRATCH = "none"
RUNS_FILE = "runs.csv"
COLUMNS = ["encoder", "label", "fraction", "repeat", "seed", "train_size", "val_size", "score", "score_name",
           "whole_tumor", "tumor_core", "enhancing_tumor", "final_val_metric", "best_val_metric", "epochs",
           "wall_s", "run_dir"]


LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Folder names `pretrain` / `finetune` give the preset inside a run: the run folder names it better.
GENERIC_NAMES = ("encoder", "model")


def split_encoder_spec(spec):
    """``"name=handle"`` -> ``("name", "handle")``; a bare handle gets `encoder_label`'s name."""
    text = str(spec).strip()
    name, sep, handle = text.partition("=")
    if sep and LABEL_RE.match(name.strip()):
        name, handle = name.strip(), handle.strip()
        if not handle:
            raise ConfigError(f"--encoders: {text!r} names no encoder after '='")
        if name == "scratch":
            raise ConfigError(f"--encoders: the name 'scratch' is the baseline's, got {text!r}")
        return name, handle
    return encoder_label(text), text


def encoder_label(handle):
    """A short name for an encoder: ``none`` -> scratch; ``RUN/encoder`` -> RUN; else the last part."""
    if handle == SCRATCH:
        return "scratch"
    path = Path(str(handle).rstrip("/\\"))
    if path.name.lower() in GENERIC_NAMES and path.parent.name:
        path = path.parent
    return path.name or str(handle)


def run_study(data, encoders, fractions, repeats, settings, out, verbose=0, log=print, workers=1, plan=None):
    """Run (or resume) the study on ``data`` (a `TaskData`); returns the list of run rows."""
    from keras_ssl3d.finetune.evaluation import evaluate_model, load_finetuned
    from keras_ssl3d.finetune.runner import RESULT_FILE, run_finetune

    out = Path(out)
    settings = settings.resolved(data.task)
    specs = [("scratch", SCRATCH)] + [split_encoder_spec(e) for e in encoders if e != SCRATCH]
    labels = [label for label, _ in specs]
    encoders = [handle for _, handle in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"encoders must have distinct names, got {labels}; name them with "
                          "--encoders NAME=PATH,OTHER=PATH")
    unsafe = [label for label in labels if not LABEL_RE.match(label)]
    if unsafe:
        raise ConfigError(f"encoder names become folder names; {unsafe} are not usable: name them with "
                          "--encoders NAME=PATH (letters, digits, '.', '_', '-')")
    if int(repeats) < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    rows = []
    total = len(encoders) * len(fractions) * int(repeats)
    done = 0
    for fraction in fractions:
        for repeat in range(int(repeats)):
            for handle, label in zip(encoders, labels):
                done += 1
                run_dir = out / "runs" / label / f"fraction_{fraction:g}" / f"repeat_{repeat}"
                result_path = run_dir / RESULT_FILE
                start = time.perf_counter()
                if result_path.is_file():
                    result = json.loads(result_path.read_text(encoding="utf-8"))
                    wall = result.get("wall_s")
                    log(f"[{done}/{total}] {label} {fraction:g} repeat {repeat}: reusing {run_dir}")
                else:
                    log(f"[{done}/{total}] {label}, {fraction:g} of the labels, repeat {repeat}")
                    s = _replace(settings, encoder=handle, label_fraction=float(fraction), seed=repeat)
                    result = run_finetune(data, s, run_dir, resume=(run_dir / "run.json").is_file(),
                                          verbose=verbose, workers=workers, plan=plan)
                    model, metadata = load_finetuned(run_dir)
                    scores = evaluate_model(model, metadata, data, subjects="val") if result["val_size"] else None
                    wall = time.perf_counter() - start
                    result["evaluation"] = _strip(scores)
                    result["wall_s"] = wall
                    from keras_ssl3d.fileio import write_json_atomic

                    write_json_atomic(result_path, result)
                rows.append(_row(label, handle, fraction, repeat, result, wall, run_dir))
                write_runs_csv(out / RUNS_FILE, rows)
                # Figures and summary after every run: an interrupted study still shows what it has.
                write_outputs(out, rows, _curves(out, rows), data.task, settings)
    return rows


def _replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)


def _strip(scores):
    if scores is None:
        return None
    return {k: v for k, v in scores.items() if k != "per_subject"}


def _row(label, handle, fraction, repeat, result, wall, run_dir):
    evaluation = result.get("evaluation") or {}
    task = result.get("task")
    score_name = "mean_dice" if task == "segmentation" else "kappa"
    regions = evaluation.get("regions") or {}
    return {
        "encoder": handle, "label": label, "fraction": float(fraction), "repeat": int(repeat), "seed": int(repeat),
        "train_size": result.get("train_size"), "val_size": result.get("val_size"),
        "score": evaluation.get(score_name), "score_name": score_name,
        "whole_tumor": regions.get("whole_tumor"), "tumor_core": regions.get("tumor_core"),
        "enhancing_tumor": regions.get("enhancing_tumor"),
        "final_val_metric": result.get("final_score"), "best_val_metric": result.get("best_score"),
        "epochs": len(result.get("curve") or []), "wall_s": None if wall is None else round(float(wall), 2),
        "run_dir": str(run_dir),
    }


def write_runs_csv(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    write_text_atomic(path, buffer.getvalue())


def _curves(out, rows):
    """``{(label, fraction): [curve per repeat]}`` of validation scores per epoch."""
    curves = {}
    for row in rows:
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text(encoding="utf-8"))
        curve = [np.nan if v is None else float(v) for v in result.get("curve") or []]
        curves.setdefault((row["label"], row["fraction"]), []).append(curve)
    return curves


def _by_label(rows):
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    return labels, fractions


def _scores(rows, label, fraction):
    return np.array([r["score"] for r in rows if r["label"] == label and r["fraction"] == fraction
                     and r["score"] is not None], dtype=float)


def _style(label, i):
    if label == "scratch":
        return {"color": "tab:orange", "linestyle": "--", "marker": "s"}
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:cyan", "tab:olive"]
    return {"color": colors[i % len(colors)], "linestyle": "-", "marker": "o"}


def plot_data_efficiency(path, rows, score_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, fractions = _by_label(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = np.array(fractions) * 100
    for i, label in enumerate(labels):
        style = _style(label, i)
        means, lows, highs = [], [], []
        for f in fractions:
            s = _scores(rows, label, f)
            means.append(s.mean() if s.size else np.nan)
            lows.append(s.min() if s.size else np.nan)
            highs.append(s.max() if s.size else np.nan)
            ax.scatter(np.full(s.size, f * 100), s, color=style["color"], alpha=0.35, s=12)
        ax.plot(x, means, label=label, **style)
        ax.fill_between(x, lows, highs, color=style["color"], alpha=0.15)
    ax.set_xlabel("% of labelled training data")
    ax.set_ylabel(_score_title(score_name))
    ax.set_title("Data efficiency: pretrained vs scratch (mean, min-max over repeats)")
    if len(fractions) > 1 and min(fractions) > 0 and max(fractions) / min(fractions) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:g}" for v in x])
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_convergence(path, curves, score_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, _ in curves))
    fractions = sorted({f for _, f in curves})
    fig, axes = plt.subplots(1, len(fractions), figsize=(3.6 * len(fractions) + 1, 3.8), squeeze=False,
                             sharey=True)
    for ax, fraction in zip(axes[0], fractions):
        for i, label in enumerate(labels):
            runs = curves.get((label, fraction), [])
            if not runs:
                continue
            length = max(len(c) for c in runs)
            stacked = np.full((len(runs), length), np.nan)
            for k, c in enumerate(runs):
                stacked[k, : len(c)] = c
            epochs = np.arange(1, length + 1)
            style = _style(label, i)
            with np.errstate(all="ignore"):
                mean = np.nanmean(stacked, axis=0)
            ax.plot(epochs, mean, label=label, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=4)
            ax.fill_between(epochs, np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0), color=style["color"],
                            alpha=0.15)
        ax.set_title(f"{fraction * 100:g}% of labels")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"validation {_score_title(score_name)}")
    axes[0][-1].legend()
    fig.suptitle("Convergence: validation score per epoch (mean, min-max over repeats)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _score_title(score_name):
    return {"mean_dice": "mean Dice (no background)", "kappa": "quadratic-weighted kappa"}.get(score_name, score_name)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def summary_markdown(rows, settings, task):
    labels, fractions = _by_label(rows)
    score_name = rows[0]["score_name"] if rows else "score"
    lines = ["# Data-efficiency study", "",
             f"Task: {task}; score: {_score_title(score_name)} on the validation subjects "
             "(mean ± std over repeats, n runs).", ""]
    lines.append("| % labels | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for f in fractions:
        cells = []
        for label in labels:
            s = _scores(rows, label, f)
            cells.append(f"{s.mean():.4f} ± {s.std():.4f} (n={s.size})" if s.size else "n/a")
        lines.append(f"| {f * 100:g} | " + " | ".join(cells) + " |")
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    lines += ["", f"Runs: {len(rows)}; total training+evaluation time: {sum(walls):.0f} s.",
              f"Settings: epochs {settings.epochs}, strategy {settings.strategy}"
              f" (warm-up {settings.warmup_epochs}), lr {settings.lr}, batch size {settings.batch_size}, "
              f"validation fraction {settings.val_fraction} (split seed {settings.split_seed})"
              + ("." if settings.augment == "none" else f", training batches augmented ({settings.augment})."),
              "Label subsets: repeat r uses seed r; identical across encoders, nested across fractions.",
              "", "Figures: `data_efficiency.png`, `convergence.png`; every run: `runs.csv`.", ""]
    return "\n".join(lines)


def write_outputs(out, rows, curves, task, settings):
    score_name = "mean_dice" if task == "segmentation" else "kappa"
    plot_data_efficiency(out / "data_efficiency.png", rows, score_name)
    plot_convergence(out / "convergence.png", curves, score_name)
    write_text_atomic(out / "summary.md", summary_markdown(rows, settings, task))
