"""Reconstruction loss of masked image modelling: the MSE on the masked voxels only."""

import keras
from keras import ops


def split_target(y_true):
    """``(N, *spatial, C + 1)`` targets -> ``(original (N, *spatial, C), mask (N, *spatial, 1))``."""
    y_true = ops.cast(y_true, "float32")
    return y_true[..., :-1], y_true[..., -1:]


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class MaskedMSE(keras.losses.Loss):
    """Per-sample mean squared error over the masked voxels (all channels).

    ``y_true`` stacks the original volume and the mask (1 = masked) as one more channel,
    ``(N, *spatial, C + 1)``; ``y_pred`` is the reconstruction ``(N, *spatial, C)``. Visible
    voxels do not count (MAE: He et al. 2022; for 3D CNNs: Wald et al., CVPR 2025).
    """

    def __init__(self, reduction="sum_over_batch_size", name="masked_mse", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        original, mask = split_target(y_true)
        error = ops.square(ops.cast(y_pred, "float32") - original) * mask
        axes = tuple(range(1, len(error.shape)))
        channels = ops.cast(ops.shape(original)[-1], "float32")
        return ops.sum(error, axis=axes) / ops.maximum(ops.sum(mask, axis=axes) * channels, 1.0)
