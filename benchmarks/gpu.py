"""Pretraining steps on a GPU at 128^3: every 3D task, fp32 and bf16, the batch the planner says fits.

    python benchmarks/gpu.py                      # on a GPU machine: one command, <= ~8 minutes
    python benchmarks/gpu.py --tasks rotation,exemplar --precisions float32 --budget-s 120
    python benchmarks/gpu.py --smoke              # anywhere: 16^3, a tiny encoder, two tasks, in-process

For each (task, precision) a fresh child process (its own device memory) builds the default encoder
(32..512) and the task with ``augment_on=auto`` (Exemplar and SimCLR augment on the device when one
is visible), compiles it, runs warm-up steps (tracing/compilation) and times ``--steps`` steps of
``train_on_batch`` on one prepared batch. The batch: the largest of 1, 2, 4, 8, ... (up to
``--max-batch``) whose memory-planner estimate (``keras_ssl3d.tasks.memory_plan``) fits 90 % of
the device's free memory without remedy, else the task's smallest batch with the planner's cheapest
remedy (``--remat`` / ``--micro-batches``).

One JSON line per configuration: step time, volumes/s (samples/s: one volume per sample), the
analytic TFLOP/s (forward FLOPs x 3), the first step's time (tracing and, with XLA, compilation), peak
device memory (TensorFlow ``get_memory_info``, JAX
``memory_stats``, torch ``max_memory_allocated``; peak RSS on a CPU), the planner's estimate, the host
transform's volumes/s on one core, and ``input_bound``: whether ``--host-workers`` cores at that rate
deliver fewer volumes/s than the step consumes. The configurations share ``--budget-s``: each gets
the time left divided by the configurations left (a child past it is killed: ``status: timeout``).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, emit, machine_info, run_json_subprocess, select_backend  # noqa: E402

TASKS = ("rpl", "cpc", "jigsaw", "rotation", "mae", "genesis", "exemplar", "simclr")  # cheapest first
PRECISIONS = ("float32", "mixed_bfloat16")


def device_budget_bytes():
    """90 % of the free accelerator memory (nvidia-smi), or of 80 % of the host's available memory."""
    from keras_ssl3d.tasks.memory_plan import resolve_budget

    budget, source = resolve_budget("auto")
    return 0.9 * budget, source


def choose_batch(task, size, precision, filters, budget, max_batch):
    """``(batch, remat, micro_batches, estimate bytes)``: see the module docstring."""
    from keras_ssl3d.tasks import TASKS as CLASSES
    from keras_ssl3d.tasks.base import RestorationTask
    from keras_ssl3d.tasks import memory_plan as mp

    least = CLASSES[task].min_batch_size
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if least <= b <= max(max_batch, least)]
    fitting = [b for b in batches
               if mp.estimate(task, size, b, filters=filters, precision=precision).peak_bytes <= budget]
    if fitting:
        e = mp.estimate(task, size, fitting[-1], filters=filters, precision=precision)
    else:
        e = mp.plan(task, size, least, budget, filters=filters, precision=precision,
                    micro_allowed=not issubclass(CLASSES[task], RestorationTask))
    return e.batch_size, e.remat, e.micro_batches, e.peak_bytes


def peak_device_bytes():
    """Peak memory of the first accelerator so far, or the process's peak RSS on a CPU; with its source."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"], "tensorflow get_memory_info"
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                return device.memory_stats()["peak_bytes_in_use"], "jax memory_stats"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated(), "torch max_memory_allocated"
    except Exception:  # a backend without these statistics: fall back to RSS
        pass
    from common import peak_rss_mb

    return peak_rss_mb() * 2 ** 20, "peak RSS (CPU)"


def run_config(args, task, precision):
    """Build, compile, time; returns the record (in this process)."""
    import keras
    import numpy as np

    from common import TRAIN_FLOPS_PER_FORWARD, count_flops, time_calls
    from keras_ssl3d.tasks.runner import build_task
    from keras_ssl3d.finetune.parsing import parse_int_list
    from keras_ssl3d.tasks import TASKS as CLASSES
    from keras_ssl3d.training.precision import precision_policy

    filters = parse_int_list(args.filters, "--filters")
    budget, source = (args.budget_gb * 1e9, "--budget-gb") if args.budget_gb else device_budget_bytes()
    batch, remat, micro, estimate = choose_batch(task, args.size, precision, filters, budget, args.max_batch)
    options = dict(CLASSES[task].small_hparams) if args.smoke else {}
    keras.utils.set_random_seed(0)
    with precision_policy(precision):
        model = build_task(task, 3, 1, args.size, filters=filters, remat=remat, micro_batches=micro,
                           task_options=options)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(jit_compile=jit)
    rng = np.random.default_rng(0)
    volumes = rng.random((batch, *(args.size,) * 3, 1), dtype=np.float32)
    t0 = time.perf_counter()
    x, y = model.transform(volumes, rng)
    host_s = time.perf_counter() - t0
    x = list(x) if isinstance(x, tuple) else x
    flops = TRAIN_FLOPS_PER_FORWARD * count_flops(model, x).total
    timing = time_calls(lambda: model.train_on_batch(x, y), steps=args.steps, warmup=args.warmup)
    peak, peak_source = peak_device_bytes()
    step_s = timing["median_s"]
    host_vps = batch / host_s if host_s > 0 else float("inf")
    return {"kind": "gpu_step", "task": task, "precision": precision, "size": args.size, "batch": batch,
            "remat": remat, "micro_batches": micro, "augment_on": getattr(model, "augment_on", "host"),
            "backend": keras.backend.backend(), "jit_compile": args.jit_compile, "step_s": step_s, "first_step_s": timing["warmup_s"][0],
            "volumes_per_s": batch / step_s, "tflop_per_step": flops / 1e12, "tflop_s": flops / step_s / 1e12,
            "peak_device_gb": peak / 1e9, "peak_source": peak_source, "estimate_gb": estimate / 1e9,
            "budget_gb": budget / 1e9, "budget_source": source, "host_transform_s": host_s,
            "host_volumes_per_s_per_core": host_vps, "host_workers": args.host_workers,
            "input_bound": host_vps * args.host_workers < batch / step_s, "status": "ok"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--filters", default="32,64,128,256,512")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=450, help="all configurations together (seconds)")
    p.add_argument("--budget-gb", type=float, default=None, help="memory to plan for [default: the device's free]")
    p.add_argument("--host-workers", type=int, default=os.cpu_count() or 1,
                   help="host cores feeding the device, for input_bound [default: all]")
    p.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    p.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="Keras compile(jit_compile=...): auto is what pretrain uses (XLA on a TensorFlow GPU)")
    p.add_argument("--smoke", action="store_true",
                   help="16^3, filters 4,8, rotation and exemplar, fp32, 1 step, in this process (CPU check)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.filters, args.steps, args.warmup, args.max_batch = 16, "4,8", 1, 1, 2
        if args.tasks == ",".join(TASKS):
            args.tasks = "rotation,exemplar"
        if args.precisions == ",".join(PRECISIONS):
            args.precisions = "float32"
    tasks = [t for t in args.tasks.split(",") if t]
    precisions = [q for q in args.precisions.split(",") if q]
    for t in tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    for q in precisions:
        if q not in PRECISIONS + ("mixed_float16",):
            p.error(f"unknown precision {q!r}")
    select_backend(args.backend)
    if args.child or args.smoke:
        for task in tasks:
            for precision in precisions:
                emit(run_config(args, task, precision))
        return
    emit({"kind": "machine", **machine_info()})
    configs = [(t, q) for t in tasks for q in precisions]
    deadline = time.perf_counter() + args.budget_s
    for i, (task, precision) in enumerate(configs):
        left = deadline - time.perf_counter()
        timeout = max(10.0, left / (len(configs) - i))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tasks", task, "--precisions", precision,
               "--size", str(args.size), "--filters", args.filters, "--max-batch", str(args.max_batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--host-workers", str(args.host_workers),
               "--backend", args.backend, "--jit-compile", args.jit_compile] + (["--budget-gb", str(args.budget_gb)] if args.budget_gb else [])
        records, status, info = run_json_subprocess(cmd, timeout, env={"PYTHONPATH": str(ROOT)})
        steps = [r for r in records if r.get("kind") == "gpu_step"]
        emit(steps[0] if steps else {"kind": "gpu_step", "task": task, "precision": precision, "size": args.size,
                                     "status": status, "timeout_s": round(timeout, 1), **info})


if __name__ == "__main__":
    main()
