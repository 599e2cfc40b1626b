"""Converged comparisons: stop when the validation score stops improving, and measure convergence speed.

Comparing two fine-tuning arms after a fixed small number of epochs measures luck and speed, not the
representation; the field trains both arms until the validation score stops improving and reports the
speed separately. Three pieces, numpy only (the Keras callbacks are in `keras_ssl3d.finetune.callbacks`):

- **patience**: a run stops once ``patience`` epochs have passed without the selection metric improving
  (strictly higher than its best so far; the epochs of an encoder warm-up do not count, the encoder was
  frozen). ``--epochs`` is the maximum. Everything is a function of the run's history, which every
  checkpoint holds, so ``--resume`` continues with the same patience state. A run whose patience ran out
  is *converged*; one that reached ``--epochs`` first is not (``converged: false`` in run.json/result.json).
- **poly** learning rate (nnU-Net): ``lr = lr0 * (1 - epoch / max_epochs) ** 0.9`` at the start of epoch
  ``epoch`` (0-based), a function of the absolute epoch, so a resumed run goes on where it stopped.
- **lr warm-up** (``lr_warmup_epochs`` N): the rate rises linearly over the first N epochs, then follows
  the schedule over the remaining ones (`epoch_lr`); also a function of the absolute epoch.
- **convergence speed** in a study: the training steps (epochs x steps per epoch) at which a run's
  validation curve first reaches ``speed_fraction`` (default 0.9) of the scratch arm's converged
  (selected-epoch) validation score on the same label subset. A run that never reaches it counts its
  maximum steps and is flagged. Paired by label subset as the test scores are: scratch minus pretrained,
  so positive means the pretrained encoder got there faster.
"""

import csv
import math
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError, DataError

LR_SCHEDULES = ("constant", "poly")
POLY_EXPONENT = 0.9
DEFAULT_SPEED_FRACTION = 0.9
# runs.csv columns a study adds per run (see `run_columns`)
RUN_COLUMNS = ["steps_per_epoch", "converged", "stopped_epoch"]


def poly_lr(initial_lr, epoch, max_epochs, exponent=POLY_EXPONENT):
    """nnU-Net's poly decay: the learning rate of (0-based) ``epoch`` in a run of ``max_epochs``."""
    if int(max_epochs) < 1:
        raise ConfigError(f"poly schedule needs max_epochs >= 1, got {max_epochs}")
    left = max(0.0, 1.0 - float(epoch) / float(max_epochs))
    return float(initial_lr) * left ** float(exponent)


def epoch_lr(initial_lr, epoch, max_epochs, schedule="constant", warmup_epochs=0):
    """The learning rate of (0-based) ``epoch``: a linear warm-up of ``warmup_epochs`` N, then ``schedule``.

    Warm-up: ``lr0 * (epoch + 1) / (N + 1)`` for ``epoch < N`` (lr0/(N+1), 2 lr0/(N+1), ..., N lr0/(N+1)),
    never 0. Then ``lr0`` (``"constant"``), or the poly decay over the epochs left after the warm-up:
    ``lr0 * (1 - (epoch - N) / (max_epochs - N)) ** 0.9``. N = 0 is `poly_lr` / the constant rate.
    """
    n = int(warmup_epochs or 0)
    if epoch < n:
        return float(initial_lr) * (int(epoch) + 1) / (n + 1)
    if schedule == "poly":
        return poly_lr(initial_lr, int(epoch) - n, int(max_epochs) - n)
    return float(initial_lr)


def check_settings(patience, lr_schedule, val_fraction, lr_warmup_epochs=0, epochs=None, min_epochs=0):
    """One-line errors for the convergence options of `FinetuneSettings`."""
    if int(min_epochs) != min_epochs or min_epochs < 0:
        raise ConfigError(f"--min-epochs must be an integer >= 0, got {min_epochs}")
    if min_epochs and epochs is not None and min_epochs > epochs:
        raise ConfigError(f"--min-epochs {min_epochs} is more than --epochs {epochs}")
    if patience is not None and (int(patience) != patience or patience < 1):
        raise ConfigError(f"--patience must be an integer >= 1, got {patience}")
    if patience is not None and not float(val_fraction) > 0:
        raise ConfigError("--patience watches the validation score: it needs validation subjects "
                          "(--val-fraction > 0)")
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"--lr-schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if int(lr_warmup_epochs) != lr_warmup_epochs or lr_warmup_epochs < 0:
        raise ConfigError(f"--lr-warmup-epochs must be an integer >= 0, got {lr_warmup_epochs}")
    if lr_warmup_epochs and epochs is not None and lr_warmup_epochs >= epochs:
        raise ConfigError(f"--lr-warmup-epochs {lr_warmup_epochs} is not less than --epochs {epochs}: the learning "
                          "rate would never reach --lr; use fewer warm-up epochs or more epochs")


def patience_start(strategy, warmup_epochs, min_epochs=0):
    """Epochs that do not count towards the patience: those of a warm-up (the encoder is frozen) and the first
    ``min_epochs`` (a pretrained arm often peaks early on a few noisy validation subjects; without a minimum,
    the patience can end before the real improvement: docs/transfer.md)."""
    warmup = int(warmup_epochs) if strategy == "warmup" and warmup_epochs else 0
    return max(warmup, int(min_epochs or 0))


def _finite(value):
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def patience_stop(rows, monitor, patience, start_epoch=0):
    """The epoch (1-based) at which ``patience`` epochs have passed without ``monitor`` improving, or None.

    ``rows``: history rows ``{"epoch": e, monitor: value}`` in epoch order. An epoch improves when its
    value is strictly above the best so far (ties keep the first best, as model selection does); epochs
    up to ``start_epoch`` never count as "without improvement".
    """
    if patience is None:
        return None
    best, best_epoch = None, 0
    for row in rows:
        epoch, value = int(row["epoch"]), row.get(monitor)
        if _finite(value) and (best is None or float(value) > best):
            best, best_epoch = float(value), epoch
        elif epoch - max(best_epoch, int(start_epoch)) >= int(patience):
            return epoch
    return None


def epochs_to_fit(rows, monitor, patience, start_epoch, max_epochs):
    """The ``epochs`` to give ``fit``: the maximum, or the epoch a resumed run already stopped at."""
    stopped = patience_stop(rows, monitor, patience, start_epoch)
    return int(max_epochs) if stopped is None else min(int(stopped), int(max_epochs))


def outcome(rows, monitor, patience, start_epoch, max_epochs):
    """What result.json and run.json record about how a run ended.

    ``converged``: True when its patience ran out, False when it reached ``max_epochs`` first, None
    without a patience rule (a fixed-length run: nothing says whether it converged).
    """
    stopped = patience_stop(rows, monitor, patience, start_epoch)
    return {"converged": None if patience is None else stopped is not None,
            "stopped_epoch": int(rows[-1]["epoch"]) if rows else 0, "max_epochs": int(max_epochs)}


def ending_line(result):
    """The line ``finetune`` prints about how a run with --patience ended (None without --patience)."""
    converged = result.get("converged")
    if converged is None:
        return None
    patience = (result.get("config") or {}).get("patience")
    if converged:
        return (f"Converged: {result.get('monitor')} did not improve for {patience} epoch(s); stopped at epoch "
                f"{result.get('stopped_epoch')} of at most {result.get('max_epochs')}")
    return (f"Not converged: reached --epochs {result.get('max_epochs')} before {patience} epoch(s) without "
            f"improvement of {result.get('monitor')}; train longer (more --epochs) to converge")


def record_outcome(run_dir, ended):
    """Add ``ended`` (see `outcome`) to the run's run.json (written atomically)."""
    from keras_ssl3d.fileio import write_json_atomic
    from keras_ssl3d.training.run import RUN_FILE, read_run_record

    record = read_run_record(run_dir)
    record.update(ended)
    write_json_atomic(Path(run_dir) / RUN_FILE, record)


# --------------------------------------------------------------------- convergence speed (study)


def run_columns(result):
    """The runs.csv cells of one run's result.json: steps per epoch, converged, stopped epoch."""
    spe = result.get("steps_per_epoch")
    if spe is None:  # a result from before the key: one step per batch of the run's batch size
        config = result.get("config") or {}
        if result.get("train_size") and config.get("batch_size"):
            spe = math.ceil(int(result["train_size"]) / int(config["batch_size"]))
    converged = result.get("converged")
    return {"steps_per_epoch": spe, "converged": None if converged is None else bool(converged),
            "stopped_epoch": result.get("stopped_epoch", len(result.get("curve") or []) or None)}


def _as_bool(value):
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False, "": None}.get(text)


def validation_curve(run_dir, monitor):
    """``[value per epoch]`` (NaN where missing) of ``monitor`` in ``run_dir/history.csv``."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise DataError("no history.csv: the run has no validation curve", path=path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if monitor not in (reader.fieldnames or []):
            raise DataError(f"history.csv has no {monitor} column", path=path)
        rows = sorted(reader, key=lambda r: int(r["epoch"]))
    return [float(r[monitor]) if _finite(r.get(monitor)) else math.nan for r in rows]


def steps_to_reach(curve, target, steps_per_epoch):
    """``(steps, reached)``: steps until ``curve`` first reaches ``target``, else its full length."""
    for epoch, value in enumerate(curve, start=1):
        if not math.isnan(value) and value >= target:
            return epoch * int(steps_per_epoch), True
    return len(curve) * int(steps_per_epoch), False


def run_speeds(rows, speed_fraction=DEFAULT_SPEED_FRACTION, baseline="scratch"):
    """Per run of a study (rows as in runs.csv): the steps to reach ``speed_fraction`` of the baseline's
    converged validation score on the same label subset (``(fraction, repeat)``).

    Returns dicts ``label, fraction, repeat, target, steps, reached, max_steps, converged``; runs without
    a finished baseline partner are left out.
    """
    if not 0.0 < float(speed_fraction) <= 1.0:
        raise ConfigError(f"--speed-fraction must be in (0, 1], got {speed_fraction}")
    curves, targets = {}, {}
    for row in rows:
        monitor = f"val_{row.get('score_name') or 'mean_dice'}"
        curves[id(row)] = validation_curve(row["run_dir"], monitor)
    for row in rows:
        if row["label"] != baseline or row.get("selected_epoch") in (None, ""):
            continue
        curve = curves[id(row)]
        epoch = int(row["selected_epoch"])
        if not 0 < epoch <= len(curve) or math.isnan(curve[epoch - 1]):
            raise DataError(f"selected epoch {epoch} has no validation score in history.csv",
                            path=Path(row["run_dir"]) / "history.csv")
        targets[(float(row["fraction"]), int(row["repeat"]))] = float(speed_fraction) * curve[epoch - 1]
    speeds = []
    for row in rows:
        key = (float(row["fraction"]), int(row["repeat"]))
        if key not in targets or row.get("steps_per_epoch") in (None, ""):
            continue
        curve, spe = curves[id(row)], int(float(row["steps_per_epoch"]))
        steps, reached = steps_to_reach(curve, targets[key], spe)
        speeds.append({"label": row["label"], "fraction": key[0], "repeat": key[1], "target": targets[key],
                       "steps": steps, "reached": reached, "max_steps": len(curve) * spe,
                       "converged": _as_bool(row.get("converged"))})
    return speeds


def compare_speeds(speeds, baseline="scratch", **kwargs):
    """``{(label, fraction): PairedComparison}`` of scratch steps minus the label's steps, per label subset
    (positive: the pretrained encoder reached the target in fewer steps); ``kwargs`` go to `paired_comparison`."""
    from keras_ssl3d.finetune.statistics import paired_comparison

    steps = {(s["label"], s["fraction"], s["repeat"]): s["steps"] for s in speeds}
    out = {}
    for label in dict.fromkeys(s["label"] for s in speeds if s["label"] != baseline):
        for fraction in sorted({s["fraction"] for s in speeds}):
            repeats = sorted(r for (lab, f, r) in steps if lab == label and f == fraction
                             and (baseline, f, r) in steps)
            if repeats:
                out[(label, fraction)] = paired_comparison([steps[(baseline, fraction, r)] for r in repeats],
                                                           [steps[(label, fraction, r)] for r in repeats], **kwargs)
    return out


def at_maximum_note(rows, label, fraction):
    """`` (2/3 hit --epochs)`` for a table cell when runs of ``label`` at ``fraction`` stopped at their
    maximum without converging (patience not met); empty otherwise."""
    runs = [r for r in rows if r["label"] == label and float(r["fraction"]) == float(fraction)]
    hit = sum(1 for r in runs if _as_bool(r.get("converged")) is False)
    return f" ({hit}/{len(runs)} hit --epochs)" if hit else ""


def speed_markdown(rows, speed_fraction=DEFAULT_SPEED_FRACTION, baseline="scratch"):
    """Summary lines: convergence speed per encoder and fraction, and its paired difference to scratch."""
    from keras_ssl3d.finetune.statistics import format_comparison

    usable = [r for r in rows if r.get("steps_per_epoch") not in (None, "")]
    if not any(r["label"] == baseline for r in usable):
        return []
    speeds = run_speeds(usable, speed_fraction, baseline)
    if not speeds:
        return []
    comparisons = compare_speeds(speeds, baseline)
    labels = list(dict.fromkeys(s["label"] for s in speeds))
    lines = ["", "## Convergence speed", "",
             f"Training steps (epochs x steps per epoch) until the validation curve first reaches "
             f"{float(speed_fraction):g} x the {baseline} arm's converged (selected-epoch) validation score on "
             "the same label subset: mean ± sd over label subsets; `k not reached` counts runs that never got "
             "there (they count their maximum steps). The difference is scratch minus the encoder, paired by "
             "label subset: positive = the pretrained encoder is faster (better).", "",
             "| % labels | encoder | steps | difference to scratch (steps) |", "|---|---|---|---|"]
    for fraction in sorted({s["fraction"] for s in speeds}):
        for label in labels:
            mine = [s for s in speeds if s["label"] == label and s["fraction"] == fraction]
            if not mine:
                continue
            values = np.array([s["steps"] for s in mine], dtype=float)
            missed = sum(1 for s in mine if not s["reached"])
            cell = f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if values.size > 1 else "") \
                + f" (n={values.size}" + (f", {missed} not reached)" if missed else ")")
            diff = "—" if label == baseline or (label, fraction) not in comparisons \
                else format_comparison(comparisons[(label, fraction)])
            lines.append(f"| {fraction * 100:g} | {label} | {cell} | {diff} |")
    return lines
