"""Normalization choice for conv blocks.

Batch norm is the paper's default, but with 3D batches of 1-2 volumes its statistics are noisy;
group and instance norm do not depend on the batch size.
"""

import keras

from keras_ssl3d.names import NORMALIZATIONS  # noqa: E402


def check_norm(norm):
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
    return norm


def make_norm(norm, channels, name, groups=8):
    """A normalization layer over the last (channel) axis, or None for ``norm="none"``."""
    check_norm(norm)
    if norm == "batch":
        return keras.layers.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5, name=name)
    if norm == "group":
        g = groups
        while channels % g:
            g -= 1
        return keras.layers.GroupNormalization(groups=g, axis=-1, epsilon=1e-5, name=name)
    if norm == "instance":
        return keras.layers.GroupNormalization(groups=-1, axis=-1, epsilon=1e-5, name=name)
    return None
