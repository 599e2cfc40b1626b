"""Sliding-window inference: exact on one window, covers odd sizes, blends overlaps."""

import keras
import numpy as np
import pytest

from keras_ssl3d import Segmenter3D
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune.inference import (
    blend_weights,
    predict_labels,
    sliding_window_predict,
    window_starts,
)
from helpers import tiny_encoder3d, to_numpy

pytestmark = pytest.mark.multibackend


@pytest.fixture(scope="module")
def model():
    return Segmenter3D(tiny_encoder3d(in_channels=2, filters=(4, 8)), num_classes=3)


class _ChannelSum(keras.layers.Layer):
    """A translation-equivariant 'model': output = input channel sum, per voxel (2 classes)."""

    def call(self, x):
        s = keras.ops.sum(x, axis=-1, keepdims=True)
        return keras.ops.concatenate([s, 1.0 - s], axis=-1)


def _pointwise_model():
    inputs = keras.Input((None, None, None, 2))
    return keras.Model(inputs, _ChannelSum()(inputs))


def test_window_starts_cover_the_axis():
    assert window_starts(8, 8, 0.5) == [0]
    assert window_starts(5, 8, 0.5) == [0]
    assert window_starts(16, 8, 0.5) == [0, 4, 8]
    assert window_starts(13, 8, 0.5) == [0, 4, 5]
    assert window_starts(13, 8, 0.0) == [0, 5]


def test_blend_weights():
    g = blend_weights((5, 5, 5))
    assert g.shape == (5, 5, 5) and g[2, 2, 2] == pytest.approx(1.0) and g.min() > 0
    assert g[0, 2, 2] < g[1, 2, 2] < g[2, 2, 2]
    np.testing.assert_array_equal(blend_weights((2, 3, 4), "constant"), np.ones((2, 3, 4)))
    with pytest.raises(ConfigError, match="blend"):
        blend_weights((2, 2, 2), "linear")


def test_equals_direct_prediction_when_volume_is_the_window(model):
    volume = np.random.default_rng(0).random((8, 8, 8, 2), dtype=np.float32)
    direct = to_numpy(model(volume[None], training=False))[0]
    for blend in ("gaussian", "constant"):
        got = sliding_window_predict(model, volume, window=(8, 8, 8), blend=blend)
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_odd_sizes_and_padding(model):
    rng = np.random.default_rng(1)
    for shape in [(13, 9, 17), (5, 8, 11)]:
        volume = rng.random((*shape, 2), dtype=np.float32)
        probs = sliding_window_predict(model, volume, window=8, overlap=0.5, batch_size=3)
        assert probs.shape == (*shape, 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        labels = predict_labels(model, volume, window=8)
        assert labels.shape == shape and labels.dtype == np.uint8


def test_pointwise_model_is_reproduced_exactly():
    # A per-voxel model gives the same value in every window: the blend must return it unchanged.
    volume = np.random.default_rng(2).random((13, 10, 9, 2), dtype=np.float32) / 2
    probs = sliding_window_predict(_pointwise_model(), volume, window=(6, 6, 6), overlap=0.25, batch_size=4)
    np.testing.assert_allclose(probs[..., 0], volume.sum(-1), rtol=1e-5, atol=1e-6)


def test_batch_input_and_errors(model):
    batch = np.random.default_rng(3).random((2, 8, 8, 8, 2), dtype=np.float32)
    assert sliding_window_predict(model, batch, window=8).shape == (2, 8, 8, 8, 3)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_predict(model, batch[0], window=8, overlap=1.0)
    with pytest.raises(ConfigError, match="shape"):
        sliding_window_predict(model, batch[0, ..., 0], window=8)
