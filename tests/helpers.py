"""Small builders shared by the tests: tiny widths and shapes so the suite runs on 2 cores."""

import numpy as np

from keras_ssl3d import Encoder2D, Encoder3D

TINY_FILTERS_3D = (4, 8, 16)


def tiny_encoder3d(in_channels=1, filters=TINY_FILTERS_3D, **kwargs):
    return Encoder3D(in_channels=in_channels, filters=filters, **kwargs)


def tiny_encoder2d(in_channels=3, **kwargs):
    kwargs.setdefault("blocks", (1, 1))
    kwargs.setdefault("growth_rate", 4)
    kwargs.setdefault("stem_filters", 8)
    return Encoder2D(in_channels=in_channels, **kwargs)


def random_volumes(n=2, size=16, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, size, channels), dtype=np.float32)


def random_images(n=2, size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels), dtype=np.float32)


def to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))
