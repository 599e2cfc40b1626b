"""Segmentation losses against hand-computed values, on every backend."""

import keras
import numpy as np
import pytest

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.losses import DiceCELoss, SegmentationCrossEntropy, SoftDiceLoss, get_segmentation_loss
from helpers import to_numpy

pytestmark = pytest.mark.multibackend


def _example():
    # one sample, 2 voxels, 3 classes
    y_true = np.array([[0, 2]])
    y_pred = np.array([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]], dtype="float32")
    return y_true, y_pred


def test_soft_dice_hand_value():
    y_true, y_pred = _example()
    loss = SoftDiceLoss(smooth=0.0)
    # class1: inter 0, sums 0.5 + 0 -> dice 0; class2: inter 0.6, sums 0.7 + 1 -> 1.2/1.7
    expected = 1 - (0.0 + 1.2 / 1.7) / 2
    assert float(to_numpy(loss(y_true, y_pred))) == pytest.approx(expected, rel=1e-5)
    # background included: class0 inter 0.7, sums 0.8 + 1 -> 1.4/1.8
    with_bg = SoftDiceLoss(smooth=0.0, include_background=True)
    assert float(to_numpy(with_bg(y_true, y_pred))) == pytest.approx(1 - (1.4 / 1.8 + 0 + 1.2 / 1.7) / 3, rel=1e-5)
    # one-hot targets and (N, ..., 1) integer targets give the same value
    one_hot = np.eye(3, dtype="float32")[y_true]
    assert float(to_numpy(loss(one_hot, y_pred))) == pytest.approx(expected, rel=1e-5)
    assert float(to_numpy(loss(y_true[..., None], y_pred))) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_perfect_and_empty_class():
    y_true = np.array([[0, 1, 1]])
    perfect = np.eye(3, dtype="float32")[y_true]
    # class 2 absent in both: with smoothing it counts as Dice 1 -> loss 0
    assert float(to_numpy(SoftDiceLoss()(y_true, perfect))) == pytest.approx(0.0, abs=1e-5)


def test_cross_entropy_and_dice_ce():
    y_true, y_pred = _example()
    ce = -(np.log(0.7) + np.log(0.6)) / 2
    assert float(to_numpy(SegmentationCrossEntropy()(y_true, y_pred))) == pytest.approx(ce, rel=1e-5)
    sparse = keras.losses.SparseCategoricalCrossentropy()(y_true, y_pred)
    assert float(to_numpy(sparse)) == pytest.approx(ce, rel=1e-5)
    dice = 1 - (0.0 + 1.2 / 1.7) / 2
    combo = DiceCELoss(smooth=0.0, dice_weight=2.0, ce_weight=0.5)
    assert float(to_numpy(combo(y_true, y_pred))) == pytest.approx(2 * dice + 0.5 * ce, rel=1e-5)


def test_from_logits_matches_probabilities():
    y_true, y_pred = _example()
    logits = np.log(y_pred)
    for cls in (SoftDiceLoss, DiceCELoss, SegmentationCrossEntropy):
        a = float(to_numpy(cls()(y_true, y_pred)))
        b = float(to_numpy(cls(from_logits=True)(y_true, logits)))
        assert a == pytest.approx(b, rel=1e-5)


def test_per_sample_reduction_and_gradient_direction():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=(2, 4, 4, 4))
    y_pred = rng.random((2, 4, 4, 4, 3)).astype("float32")
    y_pred /= y_pred.sum(-1, keepdims=True)
    loss = DiceCELoss()
    per_sample = to_numpy(DiceCELoss(reduction=None)(y_true, y_pred))
    assert per_sample.shape == (2,)
    assert float(to_numpy(loss(y_true, y_pred))) == pytest.approx(per_sample.mean(), rel=1e-5)
    better = 0.5 * y_pred + 0.5 * np.eye(3, dtype="float32")[y_true]
    assert float(to_numpy(loss(y_true, better))) < float(to_numpy(loss(y_true, y_pred)))


def test_serialization_and_factory():
    loss = DiceCELoss(include_background=True, smooth=0.5, dice_weight=0.3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, DiceCELoss)
    assert restored.include_background and restored.smooth == 0.5 and restored.dice_weight == 0.3
    assert isinstance(get_segmentation_loss("dice"), SoftDiceLoss)
    assert isinstance(get_segmentation_loss("ce", include_background=True), SegmentationCrossEntropy)
    with pytest.raises(ConfigError, match="unknown segmentation loss"):
        get_segmentation_loss("focal")
