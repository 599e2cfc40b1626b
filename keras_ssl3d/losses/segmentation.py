"""Segmentation losses: soft Dice, cross-entropy and their sum (keras.ops only, any backend).

Targets may be integer label maps ``(N, *spatial)`` / ``(N, *spatial, 1)`` or one-hot /
probability maps with the prediction's shape ``(N, *spatial, K)``. Predictions are class
probabilities (softmax output) unless ``from_logits=True``.
"""

import keras
from keras import ops


def _to_one_hot(y_true, y_pred):
    """Integer labels -> one-hot with the prediction's number of classes; one-hot passes through."""
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(y_true, y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape):
        if num_classes == 1:  # binary sigmoid output: the target is already a probability map
            return ops.cast(y_true, y_pred.dtype)
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype=y_pred.dtype)


def _probabilities(y_pred, from_logits):
    if not from_logits:
        return y_pred
    if y_pred.shape[-1] == 1:
        return ops.sigmoid(y_pred)
    return ops.softmax(y_pred, axis=-1)


def soft_dice_per_sample(y_true, y_pred, include_background=False, smooth=1e-5, from_logits=False):
    """``1 - mean_k Dice_k`` for each sample: shape ``(N,)``.

    Dice_k = (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth) over the spatial axes of one sample.
    The smoothing term makes a class absent from both target and prediction count as Dice 1
    (no loss), matching the hard-Dice convention of `keras_ssl3d.finetune.metrics`.
    Channel 0 is the background; it is left out unless ``include_background`` (or K == 1).
    """
    y_pred = _probabilities(y_pred, from_logits)
    y_true = _to_one_hot(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background and y_pred.shape[-1] > 1:
        dice = dice[:, 1:]
    return 1.0 - ops.mean(dice, axis=-1)


def cross_entropy_per_sample(y_true, y_pred, from_logits=False):
    """Voxel-averaged categorical (or binary, K == 1) cross-entropy for each sample: ``(N,)``."""
    y_true_oh = _to_one_hot(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        ce = keras.losses.binary_crossentropy(y_true_oh, y_pred, from_logits=from_logits)
    else:
        ce = keras.losses.categorical_crossentropy(y_true_oh, y_pred, from_logits=from_logits)
    return ops.mean(ops.reshape(ce, (ops.shape(ce)[0], -1)), axis=-1)


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class SoftDiceLoss(keras.losses.Loss):
    """Soft Dice loss, ``1 - mean Dice`` over the foreground classes of each sample."""

    def __init__(self, include_background=False, smooth=1e-5, from_logits=False, name="soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return soft_dice_per_sample(y_true, y_pred, self.include_background, self.smooth, self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update(include_background=self.include_background, smooth=self.smooth,
                      from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Voxel-wise cross-entropy accepting integer label maps or one-hot targets.

    Equivalent to ``keras.losses.SparseCategoricalCrossentropy`` for integer labels; this class
    also takes one-hot targets and sigmoid (K == 1) outputs, like the Dice losses here.
    """

    def __init__(self, from_logits=False, name="segmentation_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return cross_entropy_per_sample(y_true, y_pred, self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class DiceCELoss(keras.losses.Loss):
    """``dice_weight * SoftDice + ce_weight * CrossEntropy``: the usual U-Net fine-tuning loss.

    Cross-entropy gives well-behaved gradients early on and for the background; Dice counters
    the class imbalance of small tumour regions.
    """

    def __init__(self, include_background=False, smooth=1e-5, dice_weight=1.0, ce_weight=1.0, from_logits=False,
                 name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        dice = soft_dice_per_sample(y_true, y_pred, self.include_background, self.smooth, self.from_logits)
        ce = cross_entropy_per_sample(y_true, y_pred, self.from_logits)
        return self.dice_weight * dice + self.ce_weight * ce

    def get_config(self):
        config = super().get_config()
        config.update(include_background=self.include_background, smooth=self.smooth,
                      dice_weight=self.dice_weight, ce_weight=self.ce_weight, from_logits=self.from_logits)
        return config


SEGMENTATION_LOSSES = {"dice": SoftDiceLoss, "ce": SegmentationCrossEntropy, "dice_ce": DiceCELoss}


def get_segmentation_loss(name, **kwargs):
    """``"dice"``, ``"ce"`` or ``"dice_ce"`` -> a loss object (used by the CLI)."""
    from keras_ssl3d.errors import ConfigError

    if name not in SEGMENTATION_LOSSES:
        raise ConfigError(f"unknown segmentation loss {name!r}; choose one of {sorted(SEGMENTATION_LOSSES)}")
    cls = SEGMENTATION_LOSSES[name]
    if cls is SegmentationCrossEntropy:
        kwargs = {k: v for k, v in kwargs.items() if k == "from_logits"}
    return cls(**kwargs)
