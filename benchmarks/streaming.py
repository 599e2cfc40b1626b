"""Streaming: the memory of `pretrain` and `finetune` must not grow with the number of subjects.

For each size in ``--subjects`` (default 100 and 1000) a synthetic cache of 64^3 x 4-channel
subjects is written, then ``keras-ssl3d pretrain --task rotation`` and ``keras-ssl3d finetune``
each run one epoch on it in a child process while this script samples the child's ``RssAnon``
(anonymous memory: the heap, tensors, batches) and ``VmRSS`` every 50 ms. A memory map's file
pages are not anonymous memory, so the cache's pages (which the kernel reclaims at will) do not
count. One JSON line per run; the last line compares the peaks (target: < 10 % growth).

The cache holds distinct files: subjects 0..99 are preprocessed synthetic BraTS-like data, the rest
are copies of them flipped and rolled (own file, own content), so writing 1000 subjects takes
seconds instead of generating and preprocessing 1000 NIfTI sets. The encoder is small (8, 16): what
is measured is the data path, whose memory would grow with the subjects, not the model's.

    python benchmarks/streaming.py [--subjects 100,1000] [--size 64] [--workdir DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import emit, machine_info  # noqa: E402

BASE_SUBJECTS = 100


def make_cache(root, n, size, seed=0):
    """A cache of ``n`` distinct subjects at ``size``^3 (see the module docstring)."""
    from keras_ssl3d.data import preprocess_dataset
    from keras_ssl3d.data.synthetic import make_brats_like
    from keras_ssl3d.fileio import write_json_atomic

    base = root / f"base-{size}"
    if not (base / "manifest.json").is_file():
        raw = make_brats_like(root / "raw", n_subjects=min(n, BASE_SUBJECTS), shape=(size, size, size), seed=seed)
        preprocess_dataset(raw, base, size=size)
    out = root / f"cache-{n}"
    if (out / "manifest.json").is_file():
        return out
    manifest = json.loads((base / "manifest.json").read_text())
    first = manifest["subjects"]
    subjects = []
    for i in range(n):
        rec = dict(first[i % len(first)])
        image = np.load(base / rec["image"])
        label = np.load(base / rec["label"])
        k = i // len(first)
        if k:  # a distinct copy: flip and roll by the copy number
            image = np.roll(image[::-1], k, axis=1)
            label = np.roll(label[::-1], k, axis=1)
        rec["id"] = f"Subject_{i:05d}"
        rec["image"], rec["label"] = f"images/{rec['id']}.npy", f"labels/{rec['id']}.npy"
        for rel, array in ((rec["image"], image), (rec["label"], label)):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(out / rel, np.ascontiguousarray(array))
        subjects.append(rec)
    manifest["subjects"] = subjects
    write_json_atomic(out / "manifest.json", manifest)
    return out


def _status_kb(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_sampled(cmd, timeout_s):
    """Run ``cmd``; return ``(returncode, wall_s, peak RssAnon MiB, peak VmRSS MiB, output tail)``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peaks = {"RssAnon": 0, "VmRSS": 0}
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        for field in peaks:
            value = _status_kb(proc.pid, field)
            if value:
                peaks[field] = max(peaks[field], value)
        if time.perf_counter() - t0 > timeout_s:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    tail = "".join(output).strip().splitlines()[-3:]
    return proc.returncode, time.perf_counter() - t0, peaks["RssAnon"] / 1024, peaks["VmRSS"] / 1024, tail


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="100,1000")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--filters", default="8,16")
    parser.add_argument("--workdir", default=None, help="keep the caches here (default: a temporary folder)")
    parser.add_argument("--timeout-s", type=int, default=1800)
    args = parser.parse_args()
    counts = [int(n) for n in args.subjects.split(",")]
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ssl3d-stream-"))
    root.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "keras_ssl3d.cli.main"]
    common = ["--size", str(args.size), "--epochs", "1", "--batch-size", "2", "--filters", args.filters]
    peaks = {}
    try:
        for n in counts:
            t0 = time.perf_counter()
            cache = make_cache(root, n, args.size)
            emit({"kind": "streaming_cache", "subjects": n, "seconds": round(time.perf_counter() - t0, 1),
                  "cache_gb": round(sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e9, 2)})
            commands = {
                "pretrain": [*exe, "pretrain", "--task", "rotation", "--data", str(cache), *common],
                "finetune": [*exe, "finetune", "--data", str(cache), "--encoder", "none", "--strategy", "full",
                             "--verbose", "0", *common],
            }
            for name, cmd in commands.items():
                out = root / f"run-{name}-{n}"
                shutil.rmtree(out, ignore_errors=True)
                code, wall, anon, rss, tail = run_sampled([*cmd, "--out", str(out)], args.timeout_s)
                peaks[(name, n)] = anon
                emit({"kind": "streaming_run", "run": name, "subjects": n, "size": args.size,
                      "filters": args.filters, "returncode": code, "run_wall_s": round(wall, 1),
                      "peak_rss_anon_mb": round(anon, 1), "peak_rss_mb": round(rss, 1),
                      "cache_gb": round(sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e9, 2),
                      "status": "ok" if code == 0 else "error", **({} if code == 0 else {"tail": tail})})
        lo, hi = min(counts), max(counts)
        for name in ("pretrain", "finetune"):
            if (name, lo) in peaks and (name, hi) in peaks and peaks[(name, lo)]:
                growth = peaks[(name, hi)] / peaks[(name, lo)] - 1
                emit({"kind": "streaming_summary", "run": name, "subjects": [lo, hi],
                      "peak_rss_anon_mb": [round(peaks[(name, lo)], 1), round(peaks[(name, hi)], 1)],
                      "growth_pct": round(100 * growth, 2), "target_pct": 10, "pass": bool(growth < 0.10),
                      "cpu": machine_info().get("cpu"), "load_average": machine_info().get("load_average")})
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
