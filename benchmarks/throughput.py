"""Throughput accounting at 128^3: host volumes/s per core, device-side augmentation, and how many
host cores one GPU would need per task.

    python benchmarks/throughput.py                 # every 3D task, prints JSON lines, then the table
    python benchmarks/throughput.py --tasks exemplar,simclr --seconds 2

Per task (default encoder 32..512, batch 2 of 1-channel 128^3 volumes, TensorFlow CPU):

* ``host 1 thread``: the task's numpy transform (``task.transform``, ``augment_on="host"``) in one
  thread, volumes/s (one volume = one sample read from the cache); ``host 2 threads``: two threads
  transforming concurrently, their total.
* ``stream``: what the host does when augmentation runs on the device (Exemplar, SimCLR with
  ``augment_on="device"``): copying a volume out of a memory-mapped cache, volumes/s on one core.
* ``device aug``: ``ExemplarAugment3D`` (flip, quarter turn, brightness/contrast, zoom) on this CPU,
  in a compiled ``predict_on_batch`` as in a training step, volumes/s (Exemplar augments one volume
  per sample, SimCLR two).
* ``GFLOP/sample``: analytic training FLOPs of one sample (forward x 3, ``common.count_flops``).
* ``GPU vol/s``: an accelerator at ``--gpu-tflops`` (default 989: H100 SXM dense bf16) x
  ``--utilization`` (default 0.3) divided by GFLOP/sample: the assumption, not a measurement.
* ``cores/GPU``: GPU vol/s / host vol/s per core (numpy path; for Exemplar/SimCLR also the device
  path: GPU vol/s / stream vol/s).

Each measurement repeats for ``--seconds`` (after one untimed call); the 1-minute load average is
recorded with each, as the machine may be shared.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TRAIN_FLOPS_PER_FORWARD, count_flops, emit, select_backend  # noqa: E402

TASKS = ("cpc", "rpl", "jigsaw", "rotation", "exemplar", "genesis", "mae", "simclr")
DEVICE_AUGMENTED = {"exemplar": 1, "simclr": 2}  # augmented volumes per sample


def load1():
    return round(os.getloadavg()[0], 2)


def rate(fn, volumes_per_call, seconds):
    """Volumes/s of ``fn`` over at least ``seconds`` (after one untimed call)."""
    fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * volumes_per_call / elapsed


def threaded_rate(make_fn, volumes_per_call, seconds, threads):
    """Total volumes/s of ``threads`` threads each calling its own ``make_fn()`` for ``seconds``."""
    counts = [0] * threads
    fns = [make_fn() for _ in range(threads)]
    for fn in fns:
        fn()
    stop = time.perf_counter() + seconds

    def work(i):
        while time.perf_counter() < stop:
            fns[i]()
            counts[i] += 1

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) * volumes_per_call / (time.perf_counter() - t0)


def stream_rate(size, seconds):
    """Volumes/s of copying random volumes out of a memory-mapped float32 cache (page-cache warm)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.npy"
        data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(8, size, size, size, 1))
        data[:] = 0.5
        data.flush()
        cache = np.load(path, mmap_mode="r")
        rng = np.random.default_rng(0)
        return rate(lambda: np.array(cache[rng.integers(8)]), 1, seconds)


def measure(task, args):
    import keras
    import numpy as np

    from keras_ssl3d.tasks.runner import build_task
    from keras_ssl3d.layers.augment3d import ExemplarAugment3D

    options = {"augment_on": "host"} if task in DEVICE_AUGMENTED else {}
    model = build_task(task, 3, 1, args.size, task_options=options)
    batch = np.random.default_rng(0).random((args.batch, *(args.size,) * 3, 1), dtype=np.float32)

    def make_transform():
        rng = np.random.default_rng(0)
        return lambda: model.transform(batch, rng)

    record = {"kind": "throughput", "task": task, "size": args.size, "batch": args.batch}
    record["host_1_thread_vps"] = rate(make_transform(), args.batch, args.seconds)
    record["load1_host_1"] = load1()
    record["host_2_threads_vps"] = threaded_rate(make_transform, args.batch, args.seconds, 2)
    record["load1_host_2"] = load1()
    x, _ = model.transform(batch, np.random.default_rng(0))
    x = list(x) if isinstance(x, tuple) else x
    record["gflop_per_sample"] = TRAIN_FLOPS_PER_FORWARD * count_flops(model, x).total / args.batch / 1e9
    if task in DEVICE_AUGMENTED:
        augment = keras.Sequential([keras.Input(batch.shape[1:]), ExemplarAugment3D(seed=0)])  # compiled, as in a step
        record["device_aug_vps"] = rate(lambda: augment.predict_on_batch(batch), args.batch, args.seconds)
        record["device_aug_per_sample"] = DEVICE_AUGMENTED[task]
        record["load1_device_aug"] = load1()
    del model
    keras.backend.clear_session()
    gpu_vps = args.gpu_tflops * 1e12 * args.utilization / (record["gflop_per_sample"] * 1e9)
    record.update(gpu_tflops=args.gpu_tflops, utilization=args.utilization, gpu_vps=gpu_vps,
                  cores_per_gpu_host=gpu_vps / record["host_1_thread_vps"])
    return record


def table(records, stream):
    rows = ["| task | GFLOP/sample | host 1 thread vol/s | host 2 threads vol/s | device aug vol/s (CPU) | "
            "projected GPU vol/s | host cores/GPU, numpy | host cores/GPU, device aug | load avg (1 min) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        dev = f"{r['device_aug_vps']:.1f}" if "device_aug_vps" in r else "—"
        dev_cores = f"{r['gpu_vps'] / stream['stream_vps']:.2f}" if "device_aug_vps" in r else "—"
        loads = "/".join(str(r[k]) for k in ("load1_host_1", "load1_host_2", "load1_device_aug") if k in r)
        rows.append(f"| {r['task']} | {r['gflop_per_sample']:.0f} | {r['host_1_thread_vps']:.1f} | "
                    f"{r['host_2_threads_vps']:.1f} | {dev} | {r['gpu_vps']:.0f} | {r['cores_per_gpu_host']:.1f} | "
                    f"{dev_cores} | {loads} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--gpu-tflops", type=float, default=989.0, help="the accelerator's dense bf16 peak")
    p.add_argument("--utilization", type=float, default=0.3)
    args = p.parse_args(argv)
    select_backend(os.environ.get("KERAS_BACKEND", "tensorflow"))
    stream = {"kind": "stream", "size": args.size, "stream_vps": stream_rate(args.size, args.seconds),
              "load1": load1()}
    emit(stream)
    records = []
    for task in [t for t in args.tasks.split(",") if t]:
        records.append(measure(task, args))
        emit(records[-1])
    print(table(records, stream))


if __name__ == "__main__":
    main()
