"""Input side of pretraining: volumes/s of each task's data transform and of the whole pipeline.

    python benchmarks/transforms.py --size 128 --batch 2 [--workers 1,2] [--subjects 16]

1. ``transform``: a task's numpy transform (patch grid with jitter, permutation, rotation,
   exemplar augmentations...) on an in-memory batch of random volumes: volumes/s = batch /
   median seconds per call (``--repeats`` calls after one warm-up).
2. ``pipeline``: the whole input pipeline as ``fit`` drives it: a preprocessed cache on disk
   (synthetic pancreas-like CT written as real NIfTI, run through ``preprocess_dataset``, read
   back memory-mapped by ``CachedDataset``) -> ``keras_ssl3d.data.VolumeBatches`` (shuffled
   batches, the task's transform) -> Keras' own ``PyDataset`` adapter with ``workers`` threads.
   One warm-up epoch, then volumes/s over ``--epochs`` timed epochs of ``--volumes-per-epoch``.

The runner sets these next to the model's consumption rate (batch / s per step at 128^3).
The task models here use a tiny encoder: the transforms do not depend on its width.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, package_names, peak_rss_mb, select_backend  # noqa: E402

TASK_NAMES = package_names().TASK_NAMES


def build_task(name, size, augment_on="auto"):
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.runner import build_task as build

    # exemplar, simclr: augment_on=device means the host only pairs the cached volumes
    options = {"augment_on": augment_on} if "augment_on" in TASKS[name].__init__.__code__.co_varnames else {}
    return build(name, 3, 1, size, filters=(4, 8, 16), task_options=options)


def make_cache(directory, subjects, size):
    from keras_ssl3d.data import open_cache, preprocess_dataset
    from keras_ssl3d.data.synthetic import make_pancreas_like

    t0 = time.perf_counter()
    raw = make_pancreas_like(Path(directory) / "raw", n=subjects, shape=(64, 64, 32), seed=0)
    t1 = time.perf_counter()
    preprocess_dataset(raw, Path(directory) / "cache", layout="msd", size=size, workers=1)
    t2 = time.perf_counter()
    emit({"kind": "cache_build", "subjects": subjects, "size": size, "write_nifti_s": t1 - t0,
          "preprocess_s": t2 - t1})
    return open_cache(Path(directory) / "cache")


def time_transform(task, batch, repeats, rng):
    task.transform(batch, rng)  # warm-up (e.g. loads the jigsaw permutation set)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        task.transform(batch, rng)
        times.append(time.perf_counter() - t0)
    return times


def time_pipeline(source, task, batch_size, workers, epochs, volumes_per_epoch):
    """Volumes/s that ``fit`` would receive: from the start of an epoch to its last batch.

    The cache's subjects are repeated (``indices``) to make epochs of ``volumes_per_epoch``: at
    the end of every epoch Keras' multi-worker enqueuer waits ~0.1 s to drain its queue, a fixed
    cost that real epochs (hundreds of volumes) amortise but a 16-volume epoch would not.
    Repeated subjects are read from the page cache, as a data set that fits in RAM is.
    """
    import numpy as np
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from keras_ssl3d.data import VolumeBatches

    repeat = max(1, -(-volumes_per_epoch // len(source)))
    indices = np.tile(np.arange(len(source)), repeat)
    dataset = VolumeBatches(source, batch_size=batch_size, shuffle=True, seed=0, transform=task.transform,
                            indices=indices, drop_remainder=True, workers=workers, use_multiprocessing=False,
                            max_queue_size=4)
    adapter = PyDatasetAdapter(dataset, shuffle=False)

    def one_epoch(epoch):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        t0 = time.perf_counter()
        adapter.on_epoch_begin()
        volumes = 0
        for x, *_ in adapter.get_numpy_iterator():
            first = x[0] if isinstance(x, (tuple, list)) else x
            volumes += len(first)
        seconds = time.perf_counter() - t0  # the last batch is in hand; the queue drain is not counted
        adapter.on_epoch_end()
        return volumes, seconds

    one_epoch(0)  # warm-up: page cache, thread pool, permutation set
    results = [one_epoch(e) for e in range(1, epochs + 1)]
    return sum(v for v, _ in results), sum(s for _, s in results)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tasks", default=",".join(TASK_NAMES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", default="1,2", help="worker counts for the pipeline ('' to skip it)")
    p.add_argument("--subjects", type=int, default=16, help="volumes in the benchmark cache")
    p.add_argument("--epochs", type=int, default=2, help="timed pipeline epochs")
    p.add_argument("--volumes-per-epoch", type=int, default=32, help="subjects are repeated up to this")
    p.add_argument("--backend", default="tensorflow")
    p.add_argument("--augment-on", choices=("auto", "host", "device"), default="auto",
                   help="where Exemplar and SimCLR augment (device: the host transform only pairs the volumes)")
    args = p.parse_args(argv)
    select_backend(args.backend)
    import numpy as np

    tasks = [t for t in args.tasks.split(",") if t]
    rng = np.random.default_rng(0)
    batch = rng.random((args.batch, args.size, args.size, args.size, 1), dtype=np.float32)
    built = {}
    for name in tasks:
        built[name] = task = build_task(name, args.size, args.augment_on)
        times = time_transform(task, batch, args.repeats, rng)
        emit({"kind": "transform", "task": name, "augment_on": getattr(task, "augment_on", "host"),
              "size": args.size, "batch": args.batch, "times_s": times,
              "median_s": statistics.median(times), "volumes_per_s": args.batch / statistics.median(times)})

    workers = [int(w) for w in args.workers.split(",") if w]
    if workers:
        with tempfile.TemporaryDirectory(prefix="ssl3d-bench-") as tmp:
            source = make_cache(tmp, args.subjects, args.size)
            for name in tasks:
                for w in workers:
                    volumes, seconds = time_pipeline(source, built[name], args.batch, w, args.epochs,
                                                     args.volumes_per_epoch)
                    emit({"kind": "pipeline", "task": name, "augment_on": getattr(built[name], "augment_on", "host"),
                          "size": args.size, "batch": args.batch, "workers": w,
                          "volumes": volumes, "seconds": seconds, "volumes_per_s": volumes / seconds,
                          "source": "preprocessed cache (memory-mapped .npy) of synthetic pancreas-like CT"})
    emit({"kind": "transforms_rss", "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
