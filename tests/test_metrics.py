"""Evaluation metrics against hand-computed values (Dice, BraTS regions, kappa, accuracy, MeanDice)."""

import numpy as np
import pytest

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune import metrics as M
from helpers import to_numpy

pytestmark = pytest.mark.multibackend


def test_dice_score_hand_values():
    pred = np.array([1, 1, 0, 0, 1], bool)
    true = np.array([1, 0, 0, 1, 1], bool)
    # |P|=3, |T|=3, |P&T|=2 -> 4/6
    assert M.dice_score(pred, true) == pytest.approx(4 / 6)
    assert M.dice_score(np.zeros(4, bool), np.zeros(4, bool)) == 1.0  # both empty
    assert M.dice_score(np.zeros(4, bool), np.array([0, 1, 0, 0], bool)) == 0.0  # missed
    assert M.dice_score(np.array([0, 1, 0, 0], bool), np.zeros(4, bool)) == 0.0  # false positive
    with pytest.raises(ConfigError, match="shape"):
        M.dice_score(np.zeros(3, bool), np.zeros(4, bool))


def test_dice_per_class_and_mean():
    true = np.array([[0, 1, 1], [2, 2, 0], [0, 0, 0]])
    pred = np.array([[0, 1, 0], [2, 1, 0], [0, 0, 3]])
    # class 1: P={01,11} T={01,02} inter=1 -> 2/4; class 2: P={10} T={10,11} -> 2/3; class 3: P={22}, T={} -> 0
    scores = M.dice_per_class(pred, true, num_classes=4)
    assert scores == pytest.approx({1: 0.5, 2: 2 / 3, 3: 0.0})
    assert M.mean_dice(pred, true, 4) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    with_bg = M.dice_per_class(pred, true, 4, include_background=True)
    # background: P has 5 zeros {00,12,20,21,02}, T has 5 {00,12,20,21,22}; inter 4 -> 8/10
    assert with_bg[0] == pytest.approx(0.8)
    # class absent in both counts as 1.0
    assert M.dice_per_class(np.zeros((2, 2), int), np.zeros((2, 2), int), 3) == {1: 1.0, 2: 1.0}


def test_brats_regions_with_and_without_mapping():
    assert M.brats_regions() == {"whole_tumor": (1, 2, 4), "tumor_core": (1, 4), "enhancing_tumor": (4,)}
    stored = M.brats_regions({"0": 0, "1": 1, "2": 2, "4": 3})  # JSON keys, cache stores 4 as 3
    assert stored == {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing_tumor": (3,)}
    with pytest.raises(ConfigError, match="BraTS label"):
        M.brats_regions({0: 0, 1: 1})
    assert M.is_brats_labels({0: 0, 1: 1, 2: 2, 4: 3})
    assert not M.is_brats_labels({0: 0, 1: 1})


def test_region_dice_hand_values():
    # stored labels (4 -> 3): true has core 1 at 0, oedema 2 at 1,2, enhancing 3 at 3
    true = np.array([1, 2, 2, 3, 0, 0])
    pred = np.array([1, 2, 0, 1, 0, 3])
    regions = M.brats_regions({0: 0, 1: 1, 2: 2, 4: 3})
    got = M.region_dice(pred, true, regions)
    # WT: T={0,1,2,3} P={0,1,3,5} inter 3 -> 6/8; TC: T={0,3} P={0,3,5} inter 2 -> 4/5; ET: T={3} P={5} -> 0
    assert got == pytest.approx({"whole_tumor": 0.75, "tumor_core": 0.8, "enhancing_tumor": 0.0})


def test_evaluate_segmentation_means_over_subjects():
    t1 = np.array([0, 1, 1, 2])
    p1 = np.array([0, 1, 0, 2])  # class1 2/3, class2 1
    t2 = np.array([0, 0, 0, 0])
    p2 = np.array([0, 0, 0, 1])  # class1 0 (false positive), class2 1 (both empty)
    result = M.evaluate_segmentation([p1, p2], [t1, t2], 3, class_names=["bg", "a", "b"])
    assert result["per_class"] == pytest.approx({"a": (2 / 3 + 0) / 2, "b": 1.0})
    assert result["mean_dice"] == pytest.approx(((2 / 3 + 1) / 2 + (0 + 1) / 2) / 2)
    assert "regions" not in result


def test_quadratic_weighted_kappa_hand_value():
    y_true = [0, 1, 2, 2]
    y_pred = [0, 2, 2, 1]
    # O = [[1,0,0],[0,0,1],[0,1,1]]; rows (1,1,2), cols (1,1,2); E = outer/4
    # W = (i-j)^2/4; sum W*O = 1/4 + 1/4 = 0.5
    # sum W*E = sum (i-j)^2 r_i c_j / 16 over off-diagonal (i, j):
    #   (0,1) 1*1*1 + (0,2) 4*1*2 + (1,0) 1*1*1 + (1,2) 1*1*2 + (2,0) 4*2*1 + (2,1) 1*2*1 = 22 -> 22/16
    expected = 1 - 0.5 / (22 / 16)
    assert M.quadratic_weighted_kappa(y_true, y_pred, num_classes=3) == pytest.approx(expected)
    assert M.quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert M.quadratic_weighted_kappa([1, 1], [1, 1], num_classes=3) == 1.0
    # Reversed grades are worse than chance.
    assert M.quadratic_weighted_kappa([0, 1, 2], [2, 1, 0]) < 0
    with pytest.raises(ConfigError):
        M.quadratic_weighted_kappa([0, 5], [0, 1], num_classes=3)


def test_accuracy():
    assert M.accuracy([0, 1, 2, 2], [0, 2, 2, 1]) == 0.5


def test_mean_dice_keras_metric():
    # one batch, 1x4 voxels, 3 classes; predictions as probabilities
    y_true = np.array([[0, 1, 1, 2]])
    probs = np.eye(3, dtype="float32")[np.array([[0, 1, 0, 2]])]
    metric = M.MeanDice(num_classes=3)
    metric.update_state(y_true, probs)
    assert float(to_numpy(metric.result())) == pytest.approx((2 / 3 + 1.0) / 2, rel=1e-6)
    # accumulates over batches: second batch adds a true class-2 voxel predicted as 1
    metric.update_state(np.array([[2]]), np.eye(3, dtype="float32")[np.array([[1]])])
    # class1: inter 1, |P|+|T| = 2+2 -> 0.5 ; class2: inter 1, 1+2 -> 2/3
    assert float(to_numpy(metric.result())) == pytest.approx((0.5 + 2 / 3) / 2, rel=1e-6)
    metric.reset_state()
    metric.update_state(np.zeros((1, 2)), np.eye(3, dtype="float32")[np.zeros((1, 2), int)])
    assert float(to_numpy(metric.result())) == pytest.approx(1.0)  # both empty -> 1
    assert M.MeanDice.from_config(metric.get_config()).num_classes == 3


def test_quadratic_kappa_keras_metric_matches_numpy():
    y_true = np.array([0, 1, 2, 2])
    y_pred = [0, 2, 2, 1]
    metric = M.QuadraticKappa(num_classes=3)
    metric.update_state(y_true[:2], np.eye(3, dtype="float32")[y_pred[:2]])
    metric.update_state(y_true[2:, None], np.eye(3, dtype="float32")[y_pred[2:]])
    assert float(to_numpy(metric.result())) == pytest.approx(1 - 0.5 / (22 / 16), rel=1e-5)
    metric.reset_state()
    metric.update_state(np.array([1, 1]), np.eye(3, dtype="float32")[[1, 1]])
    assert float(to_numpy(metric.result())) == pytest.approx(1.0)
