"""Calibrate and check the memory planner (``keras_ssl3d.tasks.memory_plan``) against measured peaks.

    python benchmarks/memory_plan_fit.py          # the table of estimate vs measured (BENCHMARKS.md)
    python benchmarks/memory_plan_fit.py --fit    # least-squares constants (relative error) to paste in

Measured peaks: peak RSS (``VmHWM``) of TensorFlow CPU fp32 training steps, default encoder
(32..512), one fresh process each: ``benchmarks/memory128.jsonl`` (128^3 and 64^3, with remedies),
``benchmarks/results.jsonl`` (run.py's tasks64/tasks128; Exemplar there predates the in-batch
negatives and is left out) and the hand-measured Genesis/MAE/SimCLR rows of BENCHMARKS.md.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keras_ssl3d.tasks import memory_plan as mp  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from memory128 import parse_remedy  # noqa: E402

HAND_64 = [("genesis", 2.87), ("mae", 2.92), ("simclr", 3.11), ("rotation", 2.16)]  # BENCHMARKS.md, 64^3 b2


def _jsonl(path):
    path = ROOT / "benchmarks" / path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def measurements():
    """``(task, size, batch, remat, micro, precision, peak GB, source)`` of every usable measured peak."""
    rows = []
    for r in _jsonl("memory128.jsonl"):
        if r.get("kind") == "memory128" and r.get("status") == "ok":
            remat, precision, micro = parse_remedy(r["remedy"])
            rows.append((r["task"], r["size"], r["batch"], remat, micro, precision,
                         r["peak_rss_gb"], "memory128.jsonl"))
    for r in _jsonl("results.jsonl"):
        if r.get("section") not in ("tasks64", "tasks128") or r.get("task") == "exemplar":
            continue
        if r.get("kind") == "train_step" and r.get("status", "ok") == "ok" and r.get("peak_rss_mb"):
            size = 64 if r["section"] == "tasks64" else 128
            rows.append((r["task"], size, r.get("batch") or (2 if size == 64 else 1), False, 1, "float32",
                         r["peak_rss_mb"] * 2 ** 20 / 1e9, f"results.jsonl {r['section']}"))
    for task, gb in HAND_64:
        rows.append((task, 64, 2, False, 1, "float32", gb, "BENCHMARKS.md (by hand)"))
    return rows


def features(task, size, batch, remat, micro):
    """The planner's terms of one configuration, ``([runtime, kept x U without remat, with remat, extra
    parts x U], fixed bytes)``."""
    per_sample, spatial = mp.encoder_inputs(task, size)
    inputs = batch * per_sample
    parts = max(1, min(micro, inputs))
    one = mp.level_elements(spatial, mp.DEFAULT_FILTERS)
    if task in ("genesis", "mae"):
        one += mp.decoder_elements(spatial, mp.DEFAULT_FILTERS)
    kept = -(-inputs // parts) * one * 4
    fixed = mp.PARAM_STATE_BYTES * mp.estimate_parameters(task=task)
    return [1.0, 0.0 if remat else kept, kept if remat else 0.0, (parts - 1) * one * 4], fixed


def fit(rows):
    import numpy as np

    a, b = [], []
    for task, size, batch, remat, micro, precision, gb, _ in rows:
        if precision != "float32":
            continue
        f, fixed = features(task, size, batch, remat, micro)
        a.append([v / (gb * 1e9) for v in f])
        b.append((gb * 1e9 - fixed) / (gb * 1e9))
    coef, *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
    return dict(zip(("RUNTIME_BYTES", "KEPT_NONE", "KEPT_REMAT", "MICRO_EXTRA"), coef.round(3)))


def table(rows):
    out = ["| task | size | batch | remedy | precision | measured GB | estimate GB | error | source |",
           "|---|---|---|---|---|---|---|---|---|"]
    for task, size, batch, remat, micro, precision, gb, source in rows:
        e = mp.estimate(task, size, batch, precision=precision, remat=remat, micro_batches=micro)
        err = (e.peak_bytes / 1e9 - gb) / gb
        out.append(f"| {task} | {size}^3 | {batch} | {e.remedy} | {precision} | {gb:.2f} | "
                   f"{e.peak_bytes / 1e9:.2f} | {err:+.0%} | {source} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit", action="store_true")
    args = p.parse_args()
    rows = measurements()
    print(json.dumps(fit(rows)) if args.fit else table(rows))


if __name__ == "__main__":
    main()
