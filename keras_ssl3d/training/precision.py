"""``--precision``: the Keras dtype policy a model is built under.

A layer takes its dtype policy when it is constructed, so setting the policy only while the
model is built is enough (and leaves the process's global policy as it was, which matters when
commands run in one process, as in the tests). ``mixed_float16`` also gets loss scaling (Keras'
``compile`` wraps the optimizer); the outputs of the package's heads and all its losses are
computed in float32. ``float32`` is the default: on a CPU without bf16/fp16 hardware the mixed
policies are emulated and slower (``mixed_bfloat16`` ~11x slower than fp32 on the benchmark
machine); they are for accelerators (GPU tensor cores, TPU, AMX CPUs).
"""

import contextlib

from keras_ssl3d.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def precision_policy(precision="float32"):
    """Build models inside this block to give them ``precision``; the global policy is restored after."""
    import keras

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
