"""fp32 matmul GFLOP/s of this machine: the reference the training throughput is measured against.

``python benchmarks/peak.py [--n 4096] [--repeats 5] [--tensorflow]``

numpy's BLAS (OpenBLAS in the numpy wheel) multiplies two ``n x n`` float32 matrices
(``2 n^3`` FLOPs) ``repeats`` times after one warm-up; prints best and median GFLOP/s and the
OpenBLAS kernel set in use. OpenBLAS picks its kernels from the CPU it detects
(``DYNAMIC_ARCH``); on some virtual CPUs it falls back to an older kernel set, and the
``OPENBLAS_CORETYPE`` environment variable forces one (the runner measures the default and,
where the CPU supports a better one, that one too, and takes the best as the machine's peak).
``--tensorflow`` also times TensorFlow's own fp32 matmul (Eigen/oneDNN, what the convolutions use).
"""

import argparse
import ctypes
import glob
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402


def openblas_corename():
    """The kernel set OpenBLAS chose (e.g. ``Haswell``, ``SkylakeX``, ``Zen``), or None."""
    import numpy as np

    patterns = [os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"),
                os.path.join(os.path.dirname(np.__file__), ".libs", "*openblas*")]
    for pattern in patterns:
        for lib in glob.glob(pattern):
            try:
                handle = ctypes.CDLL(lib)
            except OSError:
                continue
            for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                         "openblas_get_corename64_", "openblas_get_corename"):
                fn = getattr(handle, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    return fn().decode()
    return None


def time_matmul(matmul, a, b, repeats):
    matmul(a, b)  # warm-up (thread pool start, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b)
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tensorflow", action="store_true", help="also time TensorFlow's fp32 matmul")
    args = parser.parse_args(argv)

    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((args.n, args.n), dtype=np.float32)
    b = rng.random((args.n, args.n), dtype=np.float32)
    flops = 2 * args.n**3
    times = time_matmul(np.matmul, a, b, args.repeats)
    emit({"kind": "peak", "library": "numpy", "n": args.n, "repeats": args.repeats,
          "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"), "openblas_core": openblas_corename(),
          "best_gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9,
          "times_s": times})

    if args.tensorflow:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        times = time_matmul(lambda x, y: tf.linalg.matmul(x, y).numpy(), ta, tb, args.repeats)
        emit({"kind": "peak", "library": "tensorflow", "n": args.n, "repeats": args.repeats,
              "best_gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9,
              "times_s": times})


if __name__ == "__main__":
    main()
