"""Data-parallel step time: one JSON line per (task, number of devices).

Each configuration runs in its own process (the device split must happen before the backend
starts): ``keras_ssl3d.distribute.plan("mirrored", devices=N)`` (``none`` for 1), the task built and
compiled in its scope, then ``--steps`` timed training steps after ``--warmup`` on a global batch of
``N x --batch`` random volumes. Without accelerators the host CPU is split into logical devices
(``KERAS_SSL3D_CPU_DEVICES``): on a CPU that measures the strategy's overhead, not a speed-up (the
replicas share the same cores). On a multi-GPU machine the same command measures the speed-up:

    python benchmarks/distributed.py --devices 1,2 --size 32 --filters 8,16,32          # CPU: overhead
    python benchmarks/distributed.py --devices 1,2,4,8 --size 128 --tasks rotation,jigsaw,cpc,rpl,exemplar \\
        --policy float32,mixed_bfloat16                                                  # GPUs: speed-up
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = "--child"


def child(args):
    from keras_ssl3d import distribute

    import keras  # noqa: E402  (after keras_ssl3d: it hands KERAS_SSL3D_CPU_DEVICES to XLA)
    import numpy as np

    from keras_ssl3d.tasks.runner import build_task

    keras.mixed_precision.set_global_policy(args.policy)
    plan = distribute.plan("mirrored" if args.devices > 1 else "none", devices=args.devices)
    filters = tuple(int(f) for f in args.filters.split(",")) if args.filters else None
    with plan.scope():
        task = build_task(args.tasks, 3, 1, args.size, filters=filters, norm="group")
        task.compile()
    batch = plan.global_batch(args.batch)
    volumes = np.random.default_rng(0).random((batch, *(args.size,) * 3, 1), dtype=np.float32)
    x, y = task.transform(volumes, np.random.default_rng(1))
    n = args.warmup + args.steps  # one fit over n identical batches; each step timed by a callback

    def tile(a):
        return np.concatenate([a] * n)

    x, y = keras.tree.map_structure(tile, x), keras.tree.map_structure(tile, y)
    times = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    with plan.scope():
        task.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[StepTimer()])
    times = times[args.warmup:]
    print(json.dumps({"kind": "distributed_step", "task": args.tasks, "devices": args.devices,
                      "replicas": plan.replicas, "strategy": plan.kind, "per_device_batch": args.batch,
                      "global_batch": batch, "size": args.size, "filters": args.filters or "32..512",
                      "policy": args.policy, "step_s": round(float(np.median(times)), 4),
                      "volumes_per_s": round(batch / float(np.median(times)), 3),
                      "backend": keras.backend.backend()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rotation")
    parser.add_argument("--devices", default="1,2")
    parser.add_argument("--policy", default="float32")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2, help="per device")
    parser.add_argument("--filters", default="8,16,32", help="'' for the default 32..512 encoder")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout-s", type=int, default=1200)
    parser.add_argument(CHILD, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.devices = int(args.devices)
        return child(args)
    counts = [int(n) for n in args.devices.split(",")]
    have_gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).returncode == 0 \
        if os.path.exists("/usr/bin/nvidia-smi") else False
    for task in args.tasks.split(","):
        for policy in args.policy.split(","):
            for n in counts:
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
                if not have_gpus:
                    env["KERAS_SSL3D_CPU_DEVICES"] = str(max(counts))
                cmd = [sys.executable, __file__, CHILD, "--tasks", task, "--devices", str(n), "--policy", policy,
                       "--size", str(args.size), "--batch", str(args.batch), "--filters", args.filters,
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout_s)
                    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                    if proc.returncode == 0 and lines:
                        record = json.loads(lines[-1])
                        record["device_kind"] = "gpu" if have_gpus else "logical cpu"
                        print(json.dumps(record), flush=True)
                        continue
                    error = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                except subprocess.TimeoutExpired:
                    error = [f"timeout after {args.timeout_s} s"]
                print(json.dumps({"kind": "distributed_step", "task": task, "devices": n, "policy": policy,
                                  "status": "error", "error": error[0][-300:]}), flush=True)


if __name__ == "__main__":
    main()
