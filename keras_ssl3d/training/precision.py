"""``--precision``: the Keras dtype policy a model is built under.

A layer takes its dtype policy when it is constructed, so setting the policy only while the
model is built is enough (and leaves the process's global policy as it was, which matters when
commands run in one process, as in the tests). ``mixed_float16`` also gets loss scaling (Keras'
``compile`` wraps the optimizer); the outputs of the package's heads and all its losses are
computed in float32. ``float32`` is the default: the mixed policies are for accelerators (GPU
tensor cores, TPU, AMX CPUs). On a 2-core AVX2 EPYC ``mixed_bfloat16`` is emulated: ~11x slower than
fp32 at 32^3; on a 2-core Xeon with AMX it was 1.5x faster at 64^3, and no smaller in peak memory (BENCHMARKS.md,
"Memory at 128^3"). ``mixed_float16`` cannot train on TensorFlow's CPU (no float16 MaxPool3D
kernel): refused there with a one-line error.
"""

import contextlib

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import PRECISIONS  # noqa: E402,F401


@contextlib.contextmanager
def precision_policy(precision="float32"):
    """Build models inside this block to give them ``precision``; the global policy is restored after."""
    import keras

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "mixed_float16" and keras.backend.backend() == "tensorflow" and not _tensorflow_has_gpu():
        raise ConfigError("mixed_float16 needs a GPU with TensorFlow (its CPU kernels lack float16 MaxPool3D); "
                          "use float32 or mixed_bfloat16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _tensorflow_has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
