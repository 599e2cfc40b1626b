"""Paired comparison of a pretrained encoder against scratch on the same label subsets (numpy only).

In a study, repeat ``r`` of a label fraction trains every encoder on the same labelled subjects, so
the honest comparison is paired: the difference ``pretrained - scratch`` per subset, its mean, its
sample sd, and a bootstrap percentile interval of the mean difference (subsets resampled with
replacement, seed fixed in code so the numbers are reproducible). The verdict in words follows the
interval only: "better" when it lies above zero, "worse" when below, else "not distinguishable".
With few subsets the interval is wide (and with 2-3 it is coarse): that is the point of showing it.
"""

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError, DataError

BASELINE = "scratch"
BOOTSTRAP_SEED = 0
ONE_SUBSET = "not distinguishable (one subset)"
_INT_COLUMNS = ("repeat", "seed", "train_size", "val_size", "test_size", "selected_epoch", "epochs")
_FLOAT_COLUMNS = ("fraction", "score", "whole_tumor", "tumor_core", "enhancing_tumor", "final_val_metric",
                  "best_val_metric", "wall_s", "final_loss", "hd95", "msd", "hd95_whole_tumor", "hd95_tumor_core",
                  "hd95_enhancing_tumor", "msd_whole_tumor", "msd_tumor_core", "msd_enhancing_tumor")
_REQUIRED = ("label", "fraction", "repeat", "score")


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Differences ``pretrained - scratch`` (or ``label - baseline``) over ``n`` paired label subsets."""

    n: int
    mean: float
    sd: float  # sample sd (ddof=1) of the differences
    low: float  # bootstrap percentile interval of the mean difference
    high: float
    verdict: str


def paired_comparison(pretrained, scratch, n_boot=10_000, level=0.95, seed=BOOTSTRAP_SEED):
    """Compare scores on the same subsets: element ``i`` of both arrays is label subset ``i``."""
    a = np.asarray(pretrained, dtype=float).ravel()
    b = np.asarray(scratch, dtype=float).ravel()
    if a.size != b.size:
        raise ConfigError(f"paired comparison needs one scratch score per pretrained score (same label "
                          f"subsets), got {a.size} pretrained and {b.size} scratch scores")
    if a.size == 0:
        raise ConfigError("paired comparison needs at least one label subset with both scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ConfigError(f"paired comparison got non-finite scores (pretrained {a.tolist()}, "
                          f"scratch {b.tolist()}): a run without a test score cannot be compared")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"interval level must be in (0, 1), got {level}")
    diffs = a - b
    mean = float(diffs.mean())
    if diffs.size < 2:
        return PairedComparison(1, mean, math.nan, math.nan, math.nan, ONE_SUBSET)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(int(n_boot), diffs.size))].mean(axis=1)
    tail = (1.0 - float(level)) / 2 * 100
    low, high = (float(v) for v in np.percentile(means, [tail, 100 - tail]))
    if np.ptp(diffs) == 0:  # every resample is the same subsets' mean: no rounding noise in the interval
        low = high = mean
    verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
    return PairedComparison(int(diffs.size), mean, float(diffs.std(ddof=1)), low, high, verdict)


def format_comparison(c):
    """``+0.123 ± 0.045 [+0.010, +0.200] better``: mean ± sd [95 % interval] verdict, for tables."""
    if c.n < 2:
        return f"{c.mean:+.3f} {c.verdict}"
    return f"{c.mean:+.3f} ± {c.sd:.3f} [{c.low:+.3f}, {c.high:+.3f}] {c.verdict}"


def compare_to_scratch(rows, baseline=BASELINE, **kwargs):
    """``{(label, fraction): PairedComparison}`` of every other label of study ``rows`` minus ``baseline``.

    Rows (dicts as in runs.csv or probes.csv: label, fraction, repeat, score) are paired by
    ``(fraction, repeat)`` with the ``baseline`` label (``scratch`` for fine-tuning runs; ``random``,
    the random encoder, for a study's probes); repeats where either score is missing (a run not finished
    yet) are left out. ``kwargs`` go to `paired_comparison`.
    """
    scores = {}
    for row in rows:
        if row.get("score") is None:
            continue
        key = (row["label"], float(row["fraction"]), int(row["repeat"]))
        if key in scores:
            raise ConfigError(f"two runs of {row['label']}, fraction {row['fraction']}, repeat {row['repeat']}")
        scores[key] = float(row["score"])
    labels = list(dict.fromkeys(r["label"] for r in rows if r["label"] != baseline))
    fractions = sorted({float(r["fraction"]) for r in rows})
    out = {}
    for label in labels:
        for fraction in fractions:
            repeats = sorted(r for (lab, f, r) in scores if lab == label and f == fraction
                             and (baseline, f, r) in scores)
            if repeats:
                out[(label, fraction)] = paired_comparison(
                    [scores[(label, fraction, r)] for r in repeats],
                    [scores[(baseline, fraction, r)] for r in repeats], **kwargs)
    return out


def read_runs_csv(path):
    """The rows of a study's runs.csv (or probes.csv), numbers as numbers and empty cells as None."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no {path.name} here (run `keras-ssl3d study` first)", path=path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path.name} lacks the column(s) {', '.join(missing)}", path=path)
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {}
            for key, value in raw.items():
                value = None if value in ("", None) else value
                try:
                    if value is not None and key in _INT_COLUMNS:
                        value = int(value)
                    elif value is not None and key in _FLOAT_COLUMNS:
                        value = float(value)
                except ValueError:
                    raise DataError(f"line {line}: column {key} is not a number: {value!r}", path=path) from None
                row[key] = value
            rows.append(row)
    return rows
