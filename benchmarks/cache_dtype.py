"""The compact cache: float32 vs float16, uint16 (fixed point) and uint8 intensities. One JSON line per measurement.

``--part throughput`` (BraTS-sized 4-modality subjects, 128^3 cache): preprocessing subjects/s, the cache's
bytes, and ``VolumeBatches`` volumes/s through Keras' PyDataset adapter (1 and 2 worker threads, no transform
and a rotation transform), each dtype's rate measured in turn within one repeat so the machine's load is
shared fairly. ``cache=warm``: the files are in the page cache (a data set that fits in memory);
``cache=cold``: every cache file is evicted from the page cache (``posix_fadvise(DONTNEED)``) before each
epoch, so the epoch reads from disk (a data set larger than memory, what a compact cache is for).

``--part read``: milliseconds to read one warm 128^3 x 4 cached image into its float32 batch slot
(``CachedDataset.image(i, out=...)``, what each batch does per volume), per dtype, and for float16 also with
numpy's own cast (``np.copyto``) for comparison; the minimum and median over ``--repeats`` x subjects.

``--part finetune``: does a compact cache change a fine-tuning result? 24 synthetic training subjects and 8
test subjects, each preprocessed into a float32 cache and one per ``--compact`` dtype (``--dtype``); scratch
U-Nets fine-tuned by
``keras-ssl3d finetune`` on the same 5 label subsets (``--seed 0..4``, a quarter of the labels) from each cache,
scored by ``keras-ssl3d evaluate`` on the test cache of the same dtype, then paired by subset
(``keras_ssl3d.finetune.statistics.paired_comparison``: mean ± sd, 95 % bootstrap interval, verdict).

    python benchmarks/cache_dtype.py --part throughput [--subjects 6] [--repeats 3]
    python benchmarks/cache_dtype.py --part read [--subjects 6] [--repeats 3]
    python benchmarks/cache_dtype.py --part finetune [--subsets 5] [--epochs 20] [--compact float16,uint16]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import emit as emit_record, machine_info  # noqa: E402
from pipeline import make_subjects, pipeline_rate, rotate_transform  # noqa: E402

DTYPES = ("float32", "float16", "uint16", "uint8")


def emit(**record):
    emit_record(record)


def _bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*.npy"))


def evict(folder):
    """Drop ``folder``'s files from the page cache (clean pages; works without root)."""
    for path in Path(folder).rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_rate(cache, folder, workers):
    evict(folder)
    return pipeline_rate(cache, workers, None, epochs=1)


def throughput(root, n_subjects, repeats, size):
    from keras_ssl3d.data import open_cache, preprocess_dataset

    raw = make_subjects(root, n_subjects)
    caches = {}
    for dtype in DTYPES:
        start = time.perf_counter()
        preprocess_dataset(raw, root / dtype, size=size, dtype=dtype)
        seconds = time.perf_counter() - start
        caches[dtype] = open_cache(root / dtype)
        emit(part="throughput", measure="preprocess", dtype=dtype, subjects=n_subjects, size=size,
             subjects_per_s=round(n_subjects / seconds, 3), image_bytes=_bytes(root / dtype / "images"))
    for cache in caches.values():  # warm the page cache: every dtype is read from memory, not disk
        for i in range(len(cache)):
            cache.image(i).sum()
    for transform_name, transform in (("none", None), ("rotation", rotate_transform)):
        for workers in (1, 2):
            rates = {d: [] for d in DTYPES}
            for _ in range(repeats):
                for dtype in DTYPES:
                    rates[dtype].append(pipeline_rate(caches[dtype], workers, transform, epochs=2))
            for dtype in DTYPES:
                emit(part="throughput", measure="pipeline", cache="warm", dtype=dtype, size=size,
                     transform=transform_name, workers=workers, volumes_per_s=round(statistics.median(rates[dtype]), 2),
                     all=[round(r, 2) for r in rates[dtype]])
    for workers in (1, 2):
        rates = {d: [] for d in DTYPES}
        for _ in range(repeats):
            for dtype in DTYPES:
                rates[dtype].append(cold_rate(caches[dtype], root / dtype, workers))
        for dtype in DTYPES:
            emit(part="throughput", measure="pipeline", cache="cold", dtype=dtype, size=size, transform="none",
                 workers=workers, volumes_per_s=round(statistics.median(rates[dtype]), 2),
                 all=[round(r, 2) for r in rates[dtype]])


def read_into_batch(root, n_subjects, repeats, size):
    import numpy as np

    from keras_ssl3d.data import open_cache, preprocess_dataset
    from keras_ssl3d.data.synthetic import make_brats_like

    raw = make_brats_like(root / "raw", n_subjects=n_subjects, shape=(96, 96, 80), seed=0)  # resized up to size
    caches = {}
    for dtype in DTYPES:
        preprocess_dataset(raw, root / dtype, size=size, dtype=dtype)
        caches[dtype] = open_cache(root / dtype)
    shape = (*caches["float32"].spatial_shape, caches["float32"].num_channels)
    half = caches["float16"]

    def numpy_cast(i, out):
        np.copyto(out, np.load(half.directory / half.info(i)["image"], mmap_mode="r"))

    ways = {dtype: cache.image for dtype, cache in caches.items()}
    ways["float16 numpy cast"] = numpy_cast
    for way in ways.values():  # warm the page cache
        for i in range(n_subjects):
            way(i, out=np.empty(shape, np.float32))
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for i in range(n_subjects):
            for name, way in ways.items():  # in turn: each way shares the machine's load
                start = time.perf_counter()
                way(i, out=np.empty(shape, np.float32))  # a new slot each time, as each batch is a new array
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        emit(part="read", way=name, size=size, channels=shape[-1],
             min_ms=round(1000 * min(seconds), 2), median_ms=round(1000 * statistics.median(seconds), 2))


def _cli(*args):
    exe = Path(sys.executable).with_name("keras-ssl3d")
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"keras-ssl3d {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def finetune(root, n_subsets, epochs, size, compact=("float16", "uint16")):
    import json

    from keras_ssl3d.data import preprocess_dataset
    from keras_ssl3d.data.synthetic import make_brats_like
    from keras_ssl3d.finetune.statistics import format_comparison, paired_comparison

    train_raw = make_brats_like(root / "train", n_subjects=24, shape=(40, 40, 32), seed=0)
    test_raw = make_brats_like(root / "test", n_subjects=8, shape=(40, 40, 32), seed=1)
    scores = {}
    dtypes = ("float32", *compact)
    for dtype in dtypes:
        preprocess_dataset(train_raw, root / f"train-{dtype}", size=size, dtype=dtype)
        preprocess_dataset(test_raw, root / f"test-{dtype}", size=size, dtype=dtype)
    for seed in range(n_subsets):
        for dtype in dtypes:  # interleaved: the arms of a subset under the same load
            run = root / "runs" / f"{dtype}-{seed}"
            start = time.perf_counter()
            _cli("finetune", "--data", root / f"train-{dtype}", "--encoder", "none", "--out", run, "--size", size,
                 "--filters", "8,16,32", "--epochs", epochs, "--batch-size", 2, "--lr", "3e-3",
                 "--label-fraction", 0.25, "--seed", seed, "--augment", "flip", "--verbose", 0)
            _cli("evaluate", "--model", run, "--data", root / f"test-{dtype}", "--out", run / "test.json")
            score = json.loads((run / "test.json").read_text())["mean_dice"]
            scores.setdefault(dtype, []).append(score)
            emit(part="finetune", dtype=dtype, subset=seed, test_mean_dice=round(score, 4),
                 seconds=round(time.perf_counter() - start, 1))
    for dtype in compact:
        c = paired_comparison(scores[dtype], scores["float32"])
        emit(part="finetune", comparison=f"{dtype} - float32", n=c.n, mean=c.mean, sd=c.sd, low=c.low, high=c.high,
             verdict=c.verdict, text=format_comparison(c), float32=scores["float32"], **{dtype: scores[dtype]})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["throughput", "read", "finetune"], required=True)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="128 (throughput, read), 24 (finetune)")
    parser.add_argument("--subsets", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--compact", default="float16,uint16", help="finetune: the dtypes compared with float32")
    args = parser.parse_args()
    emit(**machine_info(), part=args.part)
    root = Path(tempfile.mkdtemp(prefix="cache-dtype-"))
    try:
        if args.part == "throughput":
            throughput(root, args.subjects, args.repeats, args.size or 128)
        elif args.part == "read":
            read_into_batch(root, args.subjects, args.repeats, args.size or 128)
        else:
            finetune(root, args.subsets, args.epochs, args.size or 24, tuple(args.compact.split(",")))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
