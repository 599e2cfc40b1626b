"""Per-convolution profile of the encoder: where a training step's time goes, layer by layer.

    python benchmarks/profile_layers.py --shape 2,64,64,64,1          # whole volumes
    python benchmarks/profile_layers.py --shape 54,18,18,18,1         # jigsaw's 64^3 patches

Walks the default ``Encoder3D`` on the given input tensor (the shapes every convolution sees,
from ``common.FlopCounter``'s walk), then trains each distinct convolution alone, at exactly
its input shape: ``BatchNormalization -> Conv`` with a mean-squared loss (the normalisation in
front makes the backward pass compute the convolution's input gradient too, as inside the
network, so one step costs 3x the convolution's forward FLOPs). Prints one JSON line per
convolution (s/step, GFLOP/s) and a summary: the sum of the per-layer times next to the full
encoder's step, so what the convolutions cannot explain (normalisation, activations, pooling,
the optimizer, framework overhead) is visible.
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FlopCounter, emit, peak_rss_mb, select_backend, time_calls  # noqa: E402


class _ShapeRecorder(FlopCounter):
    """A FLOP walk that also records each convolution's input shape."""

    def __init__(self):
        super().__init__()
        self.convs = []

    def _conv(self, layer, args, kwargs):
        before = self.total
        out = super()._conv(layer, args, kwargs)
        self.convs.append((layer, tuple(args[0].shape), self.total - before))
        return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="2,64,64,64,1", help="encoder input N,D,H,W,C")
    p.add_argument("--filters", default=None, help="encoder widths (default 32..512)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default="tensorflow")
    p.add_argument("--peak", type=float, default=None)
    args = p.parse_args(argv)
    select_backend(args.backend)
    import keras
    import numpy as np

    from keras_ssl3d.models.encoder3d import Encoder3D

    shape = tuple(int(s) for s in args.shape.split(","))
    filters = tuple(int(f) for f in args.filters.split(",")) if args.filters else (32, 64, 128, 256, 512)
    encoder = Encoder3D(in_channels=shape[-1], filters=filters)
    walk = _ShapeRecorder()
    walk.count(encoder, shape)
    rng = np.random.default_rng(0)

    total_time, total_flops = 0.0, 0
    for layer, in_shape, flops in walk.convs:
        inputs = keras.Input(in_shape[1:])
        conv = keras.layers.Conv3D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                   use_bias=layer.use_bias)
        model = keras.Model(inputs, conv(keras.layers.BatchNormalization()(inputs)))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        x = rng.random(in_shape, dtype=np.float32)
        y = np.zeros(conv.compute_output_shape(in_shape), np.float32)
        timing = time_calls(lambda: model.train_on_batch(x, y), steps=args.steps, warmup=args.warmup)
        gflop_step = 3 * flops / 1e9
        record = {"kind": "layer_profile", "input": list(shape), "layer": layer.path if hasattr(layer, "path")
                  else layer.name, "layer_input": list(in_shape), "kernel": list(layer.kernel_size),
                  "filters": layer.filters, "gflop_step": gflop_step, "step_s": timing["median_s"],
                  "gflops": gflop_step / timing["median_s"]}
        if args.peak:
            record["pct_peak"] = 100 * record["gflops"] / args.peak
        emit(record)
        total_time += timing["median_s"]
        total_flops += 3 * flops

    # The whole encoder (+ pooling + a small head), for what the sum of the layers misses.
    inputs = keras.Input(shape[1:])
    head = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling3D()(encoder(inputs)))
    model = keras.Model(inputs, head)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, 10, size=shape[0])
    timing = time_calls(lambda: model.train_on_batch(x, y), steps=args.steps, warmup=args.warmup)
    emit({"kind": "layer_profile_summary", "input": list(shape), "convolutions": len(walk.convs),
          "sum_of_conv_steps_s": total_time, "conv_gflop_step": total_flops / 1e9,
          "conv_gflops": total_flops / 1e9 / total_time, "encoder_step_s": timing["median_s"],
          "encoder_gflops": total_flops / 1e9 / timing["median_s"],
          "unexplained_s": timing["median_s"] - total_time, "voxels": math.prod(shape[:-1]),
          "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
