"""Input-channel adaptation of pretrained encoders (the paper's 2 -> 4 modality duplication)."""

import numpy as np
import pytest

from keras_ssl3d import Classifier2D, Segmenter3D
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.presets.adapt import adapt_input_channels
from helpers import random_images, random_volumes, tiny_encoder2d, to_numpy
from helpers import tiny_encoder3d as _tiny_encoder3d


def tiny_encoder3d(in_channels, **kwargs):
    # First level wider than any channel count used here: with in_channels == filters[0] the first
    # residual block has an identity shortcut instead of a conv (a different structure).
    kwargs.setdefault("filters", (8, 16, 32))
    return _tiny_encoder3d(in_channels=in_channels, **kwargs)

pytestmark = pytest.mark.multibackend


def _conv1(encoder, x):
    return to_numpy(encoder.get_layer("level1_block1").conv1(x))


def _shortcut(encoder, x):
    return to_numpy(encoder.get_layer("level1_block1").shortcut_conv(x))


def _randomize_biases(model, seed=1):
    """Non-zero biases so a bias mistake would show (fresh models have zero biases)."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])


def test_duplicate_2_to_4_keeps_first_layer_and_encoder_outputs():
    enc = tiny_encoder3d(in_channels=2, norm="group", channel_names=["t1", "flair"])
    _randomize_biases(enc)
    x2 = random_volumes(n=2, size=8, channels=2)
    x4 = np.concatenate([x2, x2], axis=-1)  # channels repeat the original ones

    new = adapt_input_channels(enc, in_channels=4, strategy="duplicate")
    assert type(new) is type(enc) and new is not enc
    assert new.in_channels == 4 and enc.in_channels == 2
    assert tuple(new.get_layer("level1_block1").conv1.kernel.shape) == (3, 3, 3, 4, 8)
    np.testing.assert_allclose(_conv1(new, x4), _conv1(enc, x2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_shortcut(new, x4), _shortcut(enc, x2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(new(x4)), to_numpy(enc(x2)), rtol=1e-4, atol=1e-4)
    # A different input (not repeating) gives different outputs: the check above can fail.
    x4_other = np.concatenate([x2, x2[..., ::-1]], axis=-1)
    assert np.abs(_conv1(new, x4_other) - _conv1(enc, x2)).max() > 1e-3


def test_duplicate_non_multiple_is_exact_for_cyclic_repeat():
    enc = tiny_encoder3d(in_channels=2)
    x2 = random_volumes(n=1, size=8, channels=2)
    x3 = np.concatenate([x2, x2[..., :1]], axis=-1)  # [x1, x2, x1]
    new = adapt_input_channels(enc, in_channels=3)
    np.testing.assert_allclose(_conv1(new, x3), _conv1(enc, x2), rtol=1e-5, atol=1e-5)


def test_other_weights_are_copied_unchanged():
    enc = tiny_encoder3d(in_channels=2)
    new = adapt_input_channels(enc, in_channels=4, strategy="random")
    changed = 0
    for old_w, new_w in zip(enc.weights, new.weights):
        if tuple(old_w.shape) == tuple(new_w.shape):
            np.testing.assert_array_equal(to_numpy(old_w), to_numpy(new_w))
        else:
            changed += 1
            assert old_w.shape[-2] == 2 and new_w.shape[-2] == 4
    assert changed == 2  # conv1 and shortcut_conv kernels of level1_block1


def test_mean_strategy_scaling():
    enc = tiny_encoder3d(in_channels=2)
    new = adapt_input_channels(enc, in_channels=4, strategy="mean")
    old_k = to_numpy(enc.get_layer("level1_block1").conv1.kernel)
    new_k = to_numpy(new.get_layer("level1_block1").conv1.kernel)
    expected = old_k.mean(axis=-2) * 2 / 4
    for j in range(4):
        np.testing.assert_allclose(new_k[..., j, :], expected, rtol=1e-6)
    # Same image in every channel -> same first-layer activations as the source model.
    single = random_volumes(n=1, size=8, channels=1)
    np.testing.assert_allclose(_conv1(new, np.repeat(single, 4, -1)), _conv1(enc, np.repeat(single, 2, -1)),
                               rtol=1e-5, atol=1e-5)


def test_by_name_copies_matching_and_fills_from_mean():
    enc = tiny_encoder3d(in_channels=2, channel_names=["T1", "FLAIR"])
    new = adapt_input_channels(enc, channels=["t1", "t1ce", "t2", "flair"], strategy="by_name")
    assert new.channel_names == ["t1", "t1ce", "t2", "flair"]
    old_k = to_numpy(enc.get_layer("level1_block1").conv1.kernel)
    new_k = to_numpy(new.get_layer("level1_block1").conv1.kernel)
    scale = 2 / 4
    np.testing.assert_allclose(new_k[..., 0, :], old_k[..., 0, :] * scale, rtol=1e-6)
    np.testing.assert_allclose(new_k[..., 3, :], old_k[..., 1, :] * scale, rtol=1e-6)
    np.testing.assert_allclose(new_k[..., 1, :], old_k.mean(-2) * scale, rtol=1e-6)
    # A pure reordering is exact, and works with the same channel count.
    swapped = adapt_input_channels(enc, channels=["flair", "t1"], strategy="by_name")
    x = random_volumes(n=1, size=8, channels=2)
    np.testing.assert_allclose(_conv1(swapped, x[..., ::-1]), _conv1(enc, x), rtol=1e-5, atol=1e-5)


def test_by_name_errors():
    enc = tiny_encoder3d(in_channels=2)
    with pytest.raises(ConfigError, match="channel_names"):
        adapt_input_channels(enc, channels=["t1", "t2", "flair"], strategy="by_name")
    named = tiny_encoder3d(in_channels=2, channel_names=["t1", "flair"])
    with pytest.raises(ConfigError, match="trained on"):
        adapt_input_channels(named, channels=["ct", "pet"], strategy="by_name")
    with pytest.raises(ConfigError, match="target channel names"):
        adapt_input_channels(named, in_channels=4, strategy="by_name")


def test_bad_arguments():
    enc = tiny_encoder3d(in_channels=2)
    with pytest.raises(ConfigError, match="strategy"):
        adapt_input_channels(enc, in_channels=4, strategy="copy")
    with pytest.raises(ConfigError, match="positive integer"):
        adapt_input_channels(enc, in_channels=0)
    with pytest.raises(ConfigError, match="3 channel names"):
        adapt_input_channels(enc, in_channels=4, channels=["a", "b", "c"])
    with pytest.raises(ConfigError):
        adapt_input_channels(enc)


def test_new_channel_count_equal_to_first_width():
    """The encoder's first block always has its projection shortcut, so 2 -> 4 works with width 4."""
    enc = _tiny_encoder3d(in_channels=2, filters=(4, 8))
    adapted = adapt_input_channels(enc, in_channels=4)
    assert adapted.in_channels == 4
    assert len(adapted.weights) == len(enc.weights)


def test_noop_returns_same_model():
    enc = tiny_encoder3d(in_channels=2, channel_names=["t1", "flair"])
    assert adapt_input_channels(enc, in_channels=2) is enc
    assert adapt_input_channels(enc, channels=["T1", "flair"]) is enc
    renamed = adapt_input_channels(enc, channels=["a", "b"])
    assert renamed is not enc and renamed.channel_names == ["a", "b"]
    for a, b in zip(enc.get_weights(), renamed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_encoder2d_stem():
    enc = tiny_encoder2d(in_channels=1)
    x1 = random_images(n=2, size=32, channels=1)
    new = adapt_input_channels(enc, in_channels=3)
    assert tuple(new.get_layer("stem_conv").kernel.shape)[-2] == 3
    np.testing.assert_allclose(to_numpy(new(np.repeat(x1, 3, -1))), to_numpy(enc(x1)), rtol=1e-4, atol=1e-4)


def test_segmenter_and_classifier():
    seg = Segmenter3D(tiny_encoder3d(in_channels=2), num_classes=3)
    x2 = random_volumes(n=1, size=16, channels=2)
    new = adapt_input_channels(seg, in_channels=4)
    assert isinstance(new, Segmenter3D) and new.in_channels == 4 and new.encoder.in_channels == 4
    np.testing.assert_allclose(to_numpy(new(np.concatenate([x2, x2], -1))), to_numpy(seg(x2)), rtol=1e-4,
                               atol=1e-5)

    clf = Classifier2D(tiny_encoder2d(in_channels=3), num_classes=4)
    x3 = random_images(n=2, size=32, channels=3)
    new_clf = adapt_input_channels(clf, in_channels=6)
    assert isinstance(new_clf, Classifier2D) and new_clf.in_channels == 6
    np.testing.assert_allclose(to_numpy(new_clf(np.concatenate([x3, x3], -1))), to_numpy(clf(x3)), rtol=1e-4,
                               atol=1e-5)


def test_from_pretrained_adapts(tmp_path):
    enc = tiny_encoder3d(in_channels=2, channel_names=["t1", "flair"])
    enc.save_pretrained(tmp_path / "preset")
    loaded = type(enc).from_pretrained(str(tmp_path / "preset"), channels=["t1", "t1ce", "t2", "flair"],
                                       adapt="by_name")
    assert loaded.in_channels == 4 and loaded.channel_names == ["t1", "t1ce", "t2", "flair"]
