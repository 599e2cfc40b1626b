"""Seconds per training step of a pretext task (or of the bare encoder on the same tensors).

    python benchmarks/train_step.py --task jigsaw --dims 3 --size 64 --batch 2
    python benchmarks/train_step.py --task encoder --like jigsaw --size 64 --batch 2
    python benchmarks/train_step.py --task rotation --backend jax --jit-compile --steps 5

Builds the default-width encoder (``Encoder3D`` 32..512 filters, or ``Encoder2D`` DenseNet-121)
and the task from ``keras_ssl3d.tasks``, makes one batch with the task's own data transform
from random volumes in [0, 1], and times ``model.train_on_batch`` (median of ``--steps`` after
``--warmup`` untimed steps; the first includes tracing/compilation). Prints a JSON line:
s/step, analytic forward and training GFLOP (training = 3x forward, see ``common``), achieved
GFLOP/s, % of ``--peak`` GFLOP/s when given, the tensor the task's encoder sees, the losses
(all finite?) and the process's peak RSS.

``--task encoder`` is the reference a task is compared with: the bare encoder + global pooling
+ a Dense softmax trained with cross-entropy, on exactly the tensor the ``--like`` task feeds its
encoder (e.g. jigsaw at 64^3 batch 2: 54 patches of 18^3), or on whole volumes without
``--like``. ``--with-bare`` times that reference in the same process, its steps alternating with
the task's (so both see the same machine conditions), and prints it as a second line
(``kind: bare``, with ``ratio_to_bare``); ``--rss-batch B`` finally runs one step at batch ``B``
and prints the peak RSS (``kind: rss_check``, the pretraining memory check). Each line is
printed as soon as it is measured. The backend is chosen with ``--backend`` (sets
``KERAS_BACKEND`` before Keras is imported; run one backend per process).
"""

import argparse
import inspect
import math
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (TRAIN_FLOPS_PER_FORWARD, count_flops, emit, package_names, peak_rss_mb,  # noqa: E402
                    select_backend, time_interleaved, warm_up)

TASK_NAMES = package_names().TASK_NAMES
BARE_CLASSES = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=("encoder",) + TASK_NAMES)
    p.add_argument("--like", choices=TASK_NAMES, default=None,
                   help="with --task encoder: train the bare encoder on the tensor this task's encoder sees")
    p.add_argument("--dims", type=int, choices=(3, 2), default=3)
    p.add_argument("--size", type=int, default=None, help="volume/image size (64 in 3D, 224 in 2D by default)")
    p.add_argument("--batch", type=int, default=2, help="samples per step (exemplar: triplets)")
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow")
    p.add_argument("--jit-compile", action="store_true", help="compile(jit_compile=True) (XLA / torch.compile)")
    p.add_argument("--dtype-policy", default="float32", help="float32 or mixed_bfloat16")
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (tracing, compilation)")
    p.add_argument("--peak", type=float, default=None, help="machine fp32 peak GFLOP/s, for %% of peak")
    p.add_argument("--filters", default=None, help="3D encoder widths, e.g. 4,8,16 (default: 32..512)")
    p.add_argument("--encoder2d", choices=("densenet121", "tiny"), default="densenet121")
    p.add_argument("--task-args", default="", help="extra task arguments, e.g. grid=3,jitter=3")
    p.add_argument("--with-bare", action="store_true",
                   help="also time the bare encoder on the task's encoder tensor (same process) and the ratio")
    p.add_argument("--rss-batch", type=int, default=0,
                   help="finally run one step at this batch size and report the peak RSS (memory check)")
    p.add_argument("--rss-limit-mb", type=float, default=0,
                   help="with --rss-batch: skip that step when the task at --batch already needs more than this "
                        "(MiB); the check is then a miss with a lower bound (and no out-of-memory kill)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default=None, help="free-form label copied into the output")
    args = p.parse_args(argv)
    if args.like and args.task != "encoder":
        p.error("--like only goes with --task encoder")
    if args.size is None:
        args.size = 64 if args.dims == 3 else 224
    return args


def parse_task_args(text):
    kwargs = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key.strip()] = int(value)
        except ValueError:
            try:
                kwargs[key.strip()] = float(value)
            except ValueError:
                kwargs[key.strip()] = value.strip()
    return kwargs


def build_encoder(args):
    if args.dims == 3:
        from keras_ssl3d.models.encoder3d import Encoder3D

        if args.filters:
            return Encoder3D(in_channels=1, filters=tuple(int(f) for f in args.filters.split(",")))
        return Encoder3D(in_channels=1)
    from keras_ssl3d.models.encoder2d import Encoder2D

    if args.encoder2d == "tiny":
        return Encoder2D(in_channels=3, blocks=(1, 1), growth_rate=4, stem_filters=8)
    return Encoder2D(in_channels=3)


def build_task(name, encoder, args):
    from keras_ssl3d.tasks import TASKS

    cls = TASKS[name]
    kwargs = parse_task_args(args.task_args)
    if "input_size" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("input_size", args.size)
    return cls(encoder=encoder, **kwargs)


def source_batch(args, rng, channels, batch):
    """Random unlabeled samples in [0, 1], shaped like the preprocessed data."""
    import numpy as np

    shape = (args.size,) * args.dims + (channels,)
    n = max(batch, 2)  # exemplar draws its negatives from the other samples of the batch
    return rng.random((n, *shape), dtype=np.float32)


def take(x, n):
    if isinstance(x, (tuple, list)):
        return type(x)(take(item, n) for item in x)
    return x[:n]


def shapes_of(x):
    if isinstance(x, (tuple, list)):
        return [tuple(int(s) for s in item.shape) for item in x]
    return [tuple(int(s) for s in x.shape)]


def encoder_input_shape(counter, encoder):
    names = (encoder.name, f"{encoder.name}_features")  # U-Net tasks call the encoder's feature extractor
    for call in counter.calls:
        if call["model"] in names:
            return call["input_shapes"][0]
    raise RuntimeError(f"the task never calls its encoder {encoder.name!r}")


def bare_model(keras, encoder, enc_shape, dims, jit_compile):
    """The reference: encoder + global pooling + Dense softmax, cross-entropy, Adam 1e-3."""
    inputs = keras.Input(shape=tuple(enc_shape[1:]))
    pool = keras.layers.GlobalAveragePooling3D() if dims == 3 else keras.layers.GlobalAveragePooling2D()
    outputs = keras.layers.Dense(BARE_CLASSES, activation="softmax", dtype="float32")(pool(encoder(inputs)))
    model = keras.Model(inputs, outputs, name="bare_encoder")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                  jit_compile=bool(jit_compile))
    return model


def bare_batch(rng, enc_shape):
    import numpy as np

    x = rng.random(tuple(enc_shape), dtype=np.float32)
    y = rng.integers(0, BARE_CLASSES, size=enc_shape[0]).astype(np.int32)
    return x, y


def step_fn(model, x, y):
    """One training step that returns its loss (``train_on_batch`` blocks until it is done)."""
    def step():
        logs = model.train_on_batch(x, y, return_dict=True)
        return float(logs["loss"])
    return step


def summarize(timing):
    """A ``time_interleaved`` result as record fields."""
    import numpy as np

    losses = timing["results"]
    return {"step_s": timing["median_s"], "min_step_s": timing["min_s"], "times_s": timing["times_s"],
            "warmup_s": timing["warmup_s"], "losses": losses, "loss_finite": bool(np.all(np.isfinite(losses)))}


def task_inputs(model, args, rng, channels, batch):
    x, y = model.transform(source_batch(args, rng, channels, batch), rng)
    return take(x, batch), take(y, batch)


def main(argv=None):
    args = parse_args(argv)
    select_backend(args.backend)
    t_start = time.perf_counter()
    import keras
    import numpy as np

    import keras_ssl3d  # noqa: F401  (its import time is reported, not timed as a step)

    record = {"kind": "train_step", "task": args.task, "like": args.like, "dims": args.dims, "size": args.size,
              "batch": args.batch, "backend": args.backend, "jit_compile": bool(args.jit_compile),
              "dtype_policy": args.dtype_policy, "steps": args.steps, "warmup": args.warmup,
              "task_args": args.task_args or None, "label": args.label}
    try:
        stage = record
        phases = {"import_s": time.perf_counter() - t_start}
        t0 = time.perf_counter()
        keras.utils.set_random_seed(args.seed)
        keras.config.set_dtype_policy(args.dtype_policy)
        rng = np.random.default_rng(args.seed)
        encoder = build_encoder(args)
        channels = encoder.input_shape[-1]
        record["filters"] = list(getattr(encoder, "filters", [])) or args.encoder2d

        if args.task == "encoder":
            # The reference alone: the tensor the --like task's encoder sees (its transform makes it).
            if args.like:
                like = build_task(args.like, encoder, args)
                x_like, _ = task_inputs(like, args, rng, channels, args.batch)
                enc_shape = encoder_input_shape(count_flops(like, x_like), encoder)
            else:
                enc_shape = (args.batch, *(args.size,) * args.dims, channels)
            model = bare_model(keras, encoder, enc_shape, args.dims, args.jit_compile)
            x, y = bare_batch(rng, enc_shape)
        else:
            model = build_task(args.task, encoder, args)
            model.compile(jit_compile=bool(args.jit_compile))
            x, y = task_inputs(model, args, rng, channels, args.batch)

        phases["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counter = count_flops(model, x)
        phases["flop_count_s"] = time.perf_counter() - t0
        enc_shape = encoder_input_shape(counter, encoder)
        record.update(input_shapes=shapes_of(x), encoder_input_shape=list(enc_shape),
                      encoder_voxels=math.prod(enc_shape[:-1]), params=int(model.count_params()),
                      gflop_forward=counter.total / 1e9,
                      gflop_step=TRAIN_FLOPS_PER_FORWARD * counter.total / 1e9,
                      flops_by_type={k: v / 1e9 for k, v in counter.by_type.items()},
                      uncounted_layers=counter.uncounted)
        task_step = step_fn(model, x, y)
        warmed = [warm_up(task_step, args.warmup)]
        record["peak_rss_mb"] = peak_rss_mb()  # this configuration alone (its warm-up step allocated the most)
        steps = [task_step]

        bare = None
        if args.with_bare and args.task != "encoder":
            # The reference, timed alternately with the task (same conditions for both).
            stage = {"kind": "bare", "task": args.task, "encoder_input_shape": list(enc_shape)}  # errors: bare's
            bare = bare_model(keras, encoder, enc_shape, args.dims, args.jit_compile)
            bx, by = bare_batch(rng, enc_shape)
            bare_gflop = TRAIN_FLOPS_PER_FORWARD * count_flops(bare, bx).total / 1e9
            steps.append(step_fn(bare, bx, by))
            warmed.append(warm_up(steps[-1], args.warmup))
            stage = record

        timings = time_interleaved(steps, args.steps, warmed)
        record.update(summarize(timings[0]))
        if record["step_s"]:
            record["gflops"] = record["gflop_step"] / record["step_s"]
            record["samples_per_s"] = args.batch / record["step_s"]
            if args.peak:
                record["peak_gflops"] = args.peak
                record["pct_peak"] = 100 * record["gflops"] / args.peak
        record["setup_s"] = phases
        record["status"] = "ok"
        emit(record)

        if bare is not None:
            stage = {"kind": "bare", "task": args.task, "encoder_input_shape": list(enc_shape),
                     "gflop_step": bare_gflop, **summarize(timings[1])}
            if stage["step_s"]:
                stage["gflops"] = stage["gflop_step"] / stage["step_s"]
                if record["step_s"]:
                    stage["ratio_to_bare"] = record["step_s"] / stage["step_s"]
            stage.update(status="ok", peak_rss_mb=peak_rss_mb(), timing="interleaved with the task's steps")
            emit(stage)

        if args.rss_batch:
            # One more step at a larger batch, for the pretraining memory check: the process's peak
            # RSS afterwards is that step's (it needs the most memory of all steps run here).
            stage = {"kind": "rss_check", "task": args.task, "batch": args.rss_batch}
            if args.rss_limit_mb and args.rss_batch > args.batch and record["peak_rss_mb"] > args.rss_limit_mb:
                stage.update(status="exceeded", lower_bound_mb=record["peak_rss_mb"], peak_rss_mb=None,
                             reason=f"batch {args.batch} already needs {record['peak_rss_mb']:.0f} MiB "
                                    f"> {args.rss_limit_mb:.0f} MiB; batch {args.rss_batch} not run")
                emit(stage)
                return 0
            if args.task == "encoder":
                big_shape = (enc_shape[0] // args.batch * args.rss_batch, *enc_shape[1:])
                bx, by = bare_batch(rng, big_shape)
            else:
                bx, by = task_inputs(model, args, rng, channels, args.rss_batch)
            t0 = time.perf_counter()
            loss = float(model.train_on_batch(bx, by, return_dict=True)["loss"])
            stage.update(first_step_s=time.perf_counter() - t0, loss_finite=bool(np.isfinite(loss)),
                         status="ok", peak_rss_mb=peak_rss_mb())
            emit(stage)
    except Exception as e:  # report the failure as a measurement, then fail the process
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        stage.update(status="error", error=f"{type(e).__name__}: {message}"[:300], peak_rss_mb=peak_rss_mb())
        if stage["kind"] == "train_step":
            record.update(stage)
            stage = record
        emit(stage)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
