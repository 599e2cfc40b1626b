"""InfoNCE and triplet loss against numpy hand computations (all backends)."""

import keras
import numpy as np
import pytest

from keras_ssl3d.losses import InfoNCE, InfoNCEAccuracy, TripletAccuracy, TripletLoss
from tests.helpers import to_numpy

pytestmark = pytest.mark.multibackend


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_info_nce_pairwise_matches_numpy():
    scores = np.array([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.8, 0.3]], dtype=np.float32)
    t = 0.5
    # query i's positive is key i; the other keys of the batch are its negatives
    expected = np.mean([-_np_log_softmax(scores[i] / t)[i] for i in range(3)])
    # by hand for row 0: -log(e^1.8 / (e^1.8 + e^0.2 + e^-0.6))
    row0 = -np.log(np.exp(1.8) / (np.exp(1.8) + np.exp(0.2) + np.exp(-0.6)))
    assert np.isclose(-_np_log_softmax(scores[0] / t)[0], row0)
    loss = InfoNCE(temperature=t)(np.zeros((3,), "int32"), scores)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)


def test_info_nce_grouped_keys_matches_numpy():
    # N=2 samples, Q=2 queries each, K=3 keys each: scores (2, 2, 6)
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 2, 6)).astype(np.float32)
    y_true = np.array([[2, 0], [1, 1]], dtype="int32")
    labels = np.array([[2, 0], [4, 4]])  # sample 1's keys start at index 3
    t = 0.1
    expected = np.mean([-_np_log_softmax(scores[n, q] / t)[labels[n, q]] for n in range(2) for q in range(2)])
    loss = InfoNCE(temperature=t)(y_true, scores)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    # a perfect scorer has loss ~0 and accuracy 1; wrong sample's key gives accuracy 0
    perfect = np.full((2, 2, 6), -1.0, np.float32)
    for n in range(2):
        for q in range(2):
            perfect[n, q, labels[n, q]] = 1.0
    assert float(to_numpy(InfoNCE(0.01)(y_true, perfect))) < 1e-6
    acc = InfoNCEAccuracy()
    acc.update_state(y_true, perfect)
    assert float(to_numpy(acc.result())) == 1.0
    acc.reset_state()
    acc.update_state(y_true[::-1], perfect)  # swapped labels: positives point at other keys
    assert float(to_numpy(acc.result())) == 0.0


def test_triplet_loss_matches_numpy():
    codes = np.array([
        [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]],    # a.p: d=0, a.n: d=2 -> relu(0-2+1)=0
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],    # d_ap=2, d_an=2-sqrt2 -> 2-0.586+1
        [[0.0, 2.0], [1.0, 1.0], [0.0, -1.0]],   # d_ap=2-sqrt2, d_an=4 -> relu(.586-4+1)=0
    ], dtype=np.float32)
    unit = codes / np.linalg.norm(codes, axis=-1, keepdims=True)
    d_ap = ((unit[:, 0] - unit[:, 1]) ** 2).sum(-1)
    d_an = ((unit[:, 0] - unit[:, 2]) ** 2).sum(-1)
    expected = np.maximum(d_ap - d_an + 1.0, 0).mean()
    assert np.isclose(expected, (2 - (2 - np.sqrt(2)) + 1) / 3)
    loss = TripletLoss(margin=1.0)(np.zeros(3), codes)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    raw = ((codes[:, 0] - codes[:, 1]) ** 2).sum(-1) - ((codes[:, 0] - codes[:, 2]) ** 2).sum(-1)
    loss_raw = TripletLoss(margin=0.5, normalize=False)(np.zeros(3), codes)
    np.testing.assert_allclose(to_numpy(loss_raw), np.maximum(raw + 0.5, 0).mean(), rtol=1e-5)
    acc = TripletAccuracy()
    acc.update_state(np.zeros(3), codes)
    np.testing.assert_allclose(to_numpy(acc.result()), np.mean(d_ap < d_an))


def test_losses_serialize():
    for loss in (InfoNCE(temperature=0.2), TripletLoss(margin=0.7, normalize=False)):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError):
        InfoNCE(temperature=0.0)
