"""Peak memory and step time of 3D pretraining at 128^3, without and with each memory remedy.

    python benchmarks/memory128.py                       # every task x remedy, 128^3 batch 2
    python benchmarks/memory128.py --tasks rotation --remedies none,remat --size 64

For each (task, remedy) a child process builds the default encoder (32..512) and the task,
makes one batch with the task's own transform from random volumes, and runs ``--warmup``
untimed then ``--steps`` timed ``train_on_batch`` calls (TensorFlow CPU fp32 unless the remedy
is a precision policy). The parent samples the child's ``/proc/PID/status`` every 0.1 s and
prints one JSON line per configuration: ``peak_rss_gb`` (the kernel's ``VmHWM``, the exact
peak of resident memory), ``peak_anon_gb`` (sampled ``RssAnon``: memory-mapped file pages do
not count), the median step time, and ``status``. A child whose RSS passes ``--max-gb`` is
killed (``status: "over"``, the peak is then a lower bound): the machine is shared, and an
out-of-memory kill would take other processes with it. Configurations run one at a time.

``--interleave`` instead times one task under each of ``--remedies`` in ONE process, the steps
alternating (``common.time_interleaved``), so that the ratios are fair on a shared machine.

Remedies: ``none``; ``remat`` (``Encoder3D(remat=True)``: every residual block rematerialised);
``microN`` (``Encoder3D(micro_batches=N)``: the encoder's batch in N sequential rematerialised parts);
``mixed_float16`` / ``mixed_bfloat16`` (``keras.mixed_precision`` policy set before building).
Combine them with ``+``, e.g. ``micro4+remat``. Exemplar always uses the batch's other samples
as negatives (2 volumes per sample through the encoder; the package's only formulation).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ROOT, emit, machine_info, package_names, parse_json_lines, select_backend, time_calls,  # noqa: E402
                    time_interleaved, warm_up)

TASK_NAMES = ("cpc", "rpl", "jigsaw", "rotation", "exemplar")
REMEDIES = ("none", "remat")
PRECISIONS = package_names().PRECISIONS


def parse_remedy(remedy):
    """``"remat+micro4+mixed_bfloat16"`` -> ``(True, "mixed_bfloat16", 4)``: remat, precision, micro-batches."""
    parts = set(remedy.split("+")) - {"none"}
    remat = "remat" in parts
    precision = [p for p in parts if p in PRECISIONS] or ["float32"]
    micro = [p for p in parts if re.fullmatch(r"micro[1-9][0-9]*", p)]
    unknown = parts - {"remat"} - set(PRECISIONS) - set(micro)
    if unknown or len(precision) > 1 or len(micro) > 1:
        raise SystemExit(f"unknown remedy {remedy!r}: combine none, remat, microN and one of {PRECISIONS} with '+'")
    return remat, precision[0], int(micro[0][5:]) if micro else 1


def child(args):
    select_backend("tensorflow")
    import keras
    import numpy as np

    from keras_ssl3d.tasks.runner import build_task

    remat, precision, micro = parse_remedy(args.remedy)
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(args.seed)
    model = build_task(args.task, 3, 1, args.size, remat=remat, micro_batches=micro)
    model.compile()
    volumes = np.random.default_rng(args.seed).random((args.batch, *(args.size,) * 3, 1), dtype=np.float32)
    x, y = model.transform(volumes, np.random.default_rng(args.seed))
    before = read_status("self") or {}
    def step():
        out = model.train_on_batch(x, y)
        return float(out[0] if isinstance(out, (list, tuple)) else out)

    timing = time_calls(step, steps=args.steps, warmup=args.warmup)
    emit({"kind": "memory_step", "median_s": timing["median_s"], "times_s": timing["times_s"],
          "warmup_s": timing["warmup_s"], "losses": timing["results"],
          "anon_before_gb": before.get("RssAnon")})


def interleaved(args, remedies):
    """Step time of one task under each of ``remedies``, all models in this process, steps alternating
    (a fair ratio on a shared machine; the memory of this process means nothing)."""
    select_backend("tensorflow")
    import keras
    import numpy as np

    from keras_ssl3d.tasks.runner import build_task
    from keras_ssl3d.training.precision import precision_policy

    steps = []
    for remedy in remedies:
        remat, precision, micro = parse_remedy(remedy)
        keras.utils.set_random_seed(args.seed)
        with precision_policy(precision):
            model = build_task(args.task, 3, 1, args.size, remat=remat, micro_batches=micro)
        model.compile()
        volumes = np.random.default_rng(args.seed).random((args.batch, *(args.size,) * 3, 1), dtype=np.float32)
        x, y = model.transform(volumes, np.random.default_rng(args.seed))
        steps.append(lambda model=model, x=x, y=y: model.train_on_batch(x, y))
    warmed = [warm_up(fn, args.warmup) for fn in steps]
    timings = time_interleaved(steps, args.steps, warmed)
    record = {"kind": "interleaved", "task": args.task, "size": args.size, "batch": args.batch,
              "remedies": remedies, "median_s": [t["median_s"] for t in timings],
              "times_s": [t["times_s"] for t in timings],
              "ratio_to_first": [t["median_s"] / timings[0]["median_s"] for t in timings]}
    emit(record)
    return record


def read_status(pid):
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for key in ("VmHWM", "VmRSS", "RssAnon"):
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
        values[key] = int(match.group(1)) * 1024 / 1e9 if match else 0.0
    return values


def measure(args, task, remedy):
    """Run one configuration in a child process, sampling its memory; returns the JSON record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tasks", task, "--remedies", remedy,
           "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--seed", str(args.seed)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    peak = {"VmHWM": 0.0, "RssAnon": 0.0}
    status = None
    while proc.poll() is None:
        values = read_status(proc.pid)
        if values:
            peak = {key: max(peak[key], values[key]) for key in peak}
            if values["VmRSS"] > args.max_gb:
                proc.kill()  # our own child only
                status = "over"
        if time.perf_counter() - t0 > args.timeout_s:
            proc.kill()
            status = "timeout"
        time.sleep(0.1)
    out, err = proc.communicate()
    status = status or ("ok" if proc.returncode == 0 else "error")
    records = [r for r in parse_json_lines(out) if r.get("kind") == "memory_step"]
    step = records[0] if records else {}
    remat, precision, micro = parse_remedy(remedy)
    return {"kind": "memory128", "task": task, "remedy": remedy, "remat": remat, "precision": precision,
            "micro_batches": micro,
            "size": args.size, "batch": args.batch, "backend": "tensorflow", "status": status,
            "peak_rss_gb": round(peak["VmHWM"], 3), "peak_anon_gb": round(peak["RssAnon"], 3),
            "anon_before_gb": step.get("anon_before_gb"), "max_gb": args.max_gb, "median_s": step.get("median_s"), "times_s": step.get("times_s"),
            "warmup_s": step.get("warmup_s"), "losses": step.get("losses"),
            "wall_s": round(time.perf_counter() - t0, 1),
            "stderr_tail": "" if status == "ok" else "\n".join(err.strip().splitlines()[-4:])}


# --------------------------------------------------------------------------- report

TARGET_GB = 8.0
RECORDS = ROOT / "benchmarks" / "memory128.jsonl"
SECTION = ROOT / "benchmarks" / "memory128.md"  # included in BENCHMARKS.md by run.py --render


def _load(path):
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _gb(record):
    if record is None:
        return "—"
    if record.get("status") == "over":
        return f"> {record['max_gb']:g} (stopped at the guard)"
    if record.get("status") != "ok":
        return record.get("status", "—")
    return f"{record['peak_rss_gb']:.2f}"


def _baseline(task, batch):
    """Peak RSS of the task without remedy from benchmarks/results.jsonl (run.py's tasks128 section);
    when the batch-``batch`` check did not finish, its batch-1 step, marked as such."""
    records = [r for r in _load(ROOT / "benchmarks" / "results.jsonl")
               if r.get("section") == "tasks128" and r.get("task") == task and r.get("peak_rss_mb")]
    for kind, b, label in (("rss_check", batch, ""), ("train_step", 1, " at batch 1, batch 2 killed by the OOM killer")):
        for r in records:
            if r.get("kind") == kind and (kind == "train_step" or r.get("batch") == b) and r.get("status", "ok") == "ok":
                return {"status": "ok", "peak_rss_gb": r["peak_rss_mb"] * 2**20 / 1e9, "source": "tasks128",
                        "label": label, "baseline_batch": b}
    return None


def _old_exemplar(section):
    """Exemplar's record from run.py's ``section`` (3 volumes per sample: before the in-batch negatives)."""
    for r in _load(ROOT / "benchmarks" / "results.jsonl"):
        if r.get("section") == section and r.get("kind") == "train_step" and r.get("task") == "exemplar":
            return r
    return None


def render(records):
    """The markdown section of BENCHMARKS.md for the records of this script."""
    rows = []
    by = {(r["task"], r["remedy"], r["size"], r["batch"]): r for r in records if r.get("kind") == "memory128"}
    for task in TASK_NAMES:
        none = by.get((task, "none", 128, 2)) or _baseline(task, 2)
        remat = by.get((task, "remat", 128, 2))
        micro = [r for (t, remedy, size, batch), r in by.items()
                 if (t, size, batch) == (task, 128, 2) and parse_remedy(remedy)[2] > 1 and r.get("status") == "ok"]
        micro = min(micro, key=lambda r: r["peak_rss_gb"]) if micro else None
        candidates = [r for r in (none, remat, micro)
                      if r and r.get("status") == "ok" and r.get("baseline_batch", 2) == 2]
        best = min(candidates, key=lambda r: r["peak_rss_gb"]) if candidates else None
        verdict = "PASS" if best and best["peak_rss_gb"] <= TARGET_GB else "MISS"
        steps = [f"{r['median_s']:.0f}" if r and r.get("median_s") else "—" for r in (none, remat, micro)]
        mark = (" ¹" + none.get("label", "")) if none and none.get("source") else ""
        micro_gb = f"{_gb(micro)} (`{micro['remedy']}`)" if micro else "—"
        rows.append(f"| {task} | {_gb(none)}{mark} | {_gb(remat)} | {micro_gb} | {' / '.join(steps)} | {verdict} |")
    out = ["## Memory at 128^3, batch 2 (TensorFlow CPU, fp32)", "",
           "`python benchmarks/memory128.py` (raw records: `benchmarks/memory128.jsonl`; this section: "
           "`--render`): peak RSS (`VmHWM`) of a training step at 128^3 batch 2, default encoder (32..512), "
           "each configuration in its own fresh process (1 warm-up + 2 timed steps), stopped when its RSS "
           "passes 9 GB (the machine is shared). Target: <= 8 GB with the best remedy. Exemplar puts 2 volumes "
           "per sample through the encoder (in-batch negatives). `microN`: `--micro-batches N`, the encoder's "
           "batch in N sequential rematerialised parts (Exemplar at batch 2 has 4 volumes: `micro4` is one "
           "volume per part). ¹ from `run.py`'s tasks128 section (`results.jsonl`). The s/step columns were "
           "measured under different loads (none and remat on 2026-12-02 with other jobs on the 2 cores, load "
           "average 8-10; micro on 2026-12-03, load average about 1.5): they cannot be compared with each other; "
           "the interleaved ratios below are the fair cost. Measured on 2026-12-02/03 on a "
           "2-core Intel Xeon with AVX-512 and AMX (BF16 matrix units), not the AVX2 EPYC of the sections above: "
           "`mixed_bfloat16` runs on AMX there.", "",
           "| task | no remedy GB | `--remat` GB | `--micro-batches` GB | s/step (none / remat / micro) | "
           "verdict (<= 8 GB) |",
           "|---|---|---|---|---|---|", *rows]
    old = _old_exemplar("tasks128")
    if old:
        out += ["", f"Exemplar before the in-batch negatives (3 volumes per sample, `results.jsonl` tasks128): "
                f"{old['peak_rss_mb'] * 2**20 / 1e9:.2f} GB at 128^3 batch 1; batch 2 was killed by the "
                "out-of-memory killer (> 15.6 GB)."]
    for r in records:
        if r.get("kind") != "interleaved":
            continue
        parts = ", ".join(f"{name} {t:.2f} s (x{q:.2f})"
                          for name, t, q in zip(r["remedies"], r["median_s"], r["ratio_to_first"]))
        out += ["", f"Step time, {r['task']} {r['size']}^3 batch {r['batch']}, all in one process with the steps "
                f"alternating (the fair comparison on a shared machine): {parts}."]
    small = [r for r in records if r.get("kind") == "memory128" and (r["size"], r["batch"]) != (128, 2)]
    if small:
        out += ["", "Other sizes and batches (same script, `--size`, `--batch`):", "",
                "| task | size | batch | remedy | peak RSS GB | s/step | status |", "|---|---|---|---|---|---|---|"]
        for r in small:
            step = f"{r['median_s']:.1f}" if r.get("median_s") else "—"
            out.append(f"| {r['task']} | {r['size']}^3 | {r['batch']} | {r['remedy']} | {_gb(r)} | {step} "
                       f"| {r['status']} |")
        old = _old_exemplar("tasks64")
        if old:
            out += ["", f"Exemplar 64^3 batch 2 before the in-batch negatives (6 volumes, `results.jsonl` tasks64): "
                    f"{old['peak_rss_mb'] * 2**20 / 1e9:.2f} GB, {old['step_s']:.2f} s/step (idle machine)."]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASK_NAMES))
    p.add_argument("--remedies", default=",".join(REMEDIES), help="comma-separated, e.g. none,remat,remat+mixed_bfloat16")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-gb", type=float, default=9.0, help="kill a configuration whose RSS passes this (GB)")
    p.add_argument("--timeout-s", type=float, default=900)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help=f"also append the JSON lines to this file (the report reads benchmarks/{RECORDS.name})")
    p.add_argument("--interleave", action="store_true",
                   help="instead: time the first task under each remedy in one process, steps alternating")
    p.add_argument("--render", action="store_true",
                   help=f"write {SECTION.name} (the BENCHMARKS.md section) from {RECORDS.name} and stop")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    remedies = [r for r in args.remedies.split(",") if r]
    for name in tasks:
        if name not in TASK_NAMES:
            p.error(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}")
    for remedy in remedies:
        parse_remedy(remedy)
    if args.render:
        from common import write_text_atomic

        write_text_atomic(SECTION, render(_load(RECORDS)))
        return
    if args.interleave:
        args.task = tasks[0]
        record = interleaved(args, remedies)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return
    if args.child:
        args.task, args.remedy = tasks[0], remedies[0]
        try:
            child(args)
        except Exception:
            traceback.print_exc()
            sys.exit(1)
        return
    emit({"kind": "machine", **machine_info()})
    for task in tasks:
        for remedy in remedies:
            record = measure(args, task, remedy)
            emit(record)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
