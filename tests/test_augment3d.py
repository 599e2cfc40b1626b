"""Device-side Exemplar/SimCLR augmentations: exact geometry against numpy, the same distribution as
the numpy transforms over many draws (frequencies and moments within ~4.5 standard errors),
seeding, serialization, and the tasks' ``augment_on`` option."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.layers import augment3d as aug
from keras_ssl3d.models import Encoder3D
from keras_ssl3d.tasks import Exemplar, SimCLR
from keras_ssl3d.tasks import transforms as T

pytestmark = pytest.mark.multibackend


def _np(x):
    return ops.convert_to_numpy(x)


def _within(observed, expected, n, sigmas=4.5):
    """A proportion ``observed`` of ``n`` draws against probability ``expected``."""
    se = np.sqrt(expected * (1 - expected) / n)
    assert abs(observed - expected) <= sigmas * se + 1e-9, (observed, expected, n)


def test_quarter_turns_and_zoom_are_numpy_s():
    assert set(aug.QUARTER_TURNS_3D) == set(T.ROTATIONS_3D[1:]) and len(aug.QUARTER_TURNS_3D) == 9
    x = np.random.default_rng(0).random((2, 4, 4, 4, 2)).astype(np.float32)
    for axes, k in T.ROTATIONS_3D[1:]:
        np.testing.assert_array_equal(_np(aug.quarter_turn(x, axes, k)), np.rot90(x, k, axes))
    x = np.random.default_rng(1).random((3, 7, 6, 5, 1)).astype(np.float32)
    factors = np.array([0.8, 1.1, 1.25], np.float32)
    out = ops.convert_to_tensor(x)
    for axis, pattern in ((1, "nij,njhwc->nihwc"), (2, "nij,ndjwc->ndiwc"), (3, "nij,ndhjc->ndhic")):
        out = ops.einsum(pattern, aug.interpolation_matrices(x.shape[axis], ops.convert_to_tensor(factors)), out)
    np.testing.assert_allclose(_np(out), T.zoom(x, factors), atol=1e-5)


def _classes(x, y, candidates):
    """Index of the candidate transform of each input sample that gives the output sample (-1: none)."""
    out = []
    for xi, yi in zip(x, y):
        hits = [c for c, f in enumerate(candidates) if f(xi[None])[0].shape == yi.shape
                and np.allclose(f(xi[None])[0], yi)]
        out.append(hits[0] if len(hits) == 1 else -1)
    return np.array(out)


FLIPS = [lambda v: v] + [lambda v, a=a: np.flip(v, axis=a) for a in (1, 2, 3)]


def test_flip_frequencies_match_numpy():
    n = 600
    x = np.random.default_rng(2).random((n, 3, 4, 5, 1)).astype(np.float32)
    device = _classes(x, _np(aug.RandomFlip3D(0.5, seed=3)(x)), FLIPS)
    host = _classes(x, T.random_flip(x, np.random.default_rng(4), 0.5), FLIPS)
    for classes in (device, host):
        assert (classes >= 0).all()
        _within(np.mean(classes == 0), 0.5, n)
        for a in (1, 2, 3):
            _within(np.mean(classes == a), 0.5 / 3, n)


ROTS = [lambda v: v] + [lambda v, axes=axes, k=k: np.rot90(v, k, axes) for axes, k in T.ROTATIONS_3D[1:]]


def test_rotation_frequencies_match_numpy():
    n = 900
    x = np.random.default_rng(5).random((n, 3, 3, 3, 1)).astype(np.float32)
    device = _classes(x, _np(aug.RandomQuarterTurn3D(0.5, seed=6)(x)), ROTS)
    host = _classes(x, T.random_rotation(x, np.random.default_rng(7), 0.5), ROTS)
    for classes in (device, host):
        assert (classes >= 0).all()
        _within(np.mean(classes == 0), 0.5, n)
        for c in range(1, 10):
            _within(np.mean(classes == c), 0.5 / 9, n)


def test_non_cubic_volumes_only_turn_180_degrees_across_unequal_axes():
    x = np.random.default_rng(8).random((200, 3, 3, 4, 1)).astype(np.float32)
    y = _np(aug.RandomQuarterTurn3D(1.0, seed=9)(x))
    assert y.shape == x.shape
    classes = _classes(x, y, ROTS)
    allowed = {c for c, (axes, k) in enumerate(T.ROTATIONS_3D)
               if axes and (k == 2 or x.shape[axes[0]] == x.shape[axes[1]])}
    assert set(classes) == allowed


def _color_params(x, y):
    """Per sample: applied?, contrast c and brightness b recovered from the output (no clipping here)."""
    xm, ym = x.mean(axis=(1, 2, 3, 4)), y.mean(axis=(1, 2, 3, 4))
    c = (y - ym[:, None, None, None, None]).std(axis=(1, 2, 3, 4)) / (x - xm[:, None, None, None, None]).std(
        axis=(1, 2, 3, 4))
    applied = ~np.all(np.isclose(x, y, atol=1e-6), axis=(1, 2, 3, 4))
    return applied, c[applied], (ym - xm)[applied]


def test_brightness_contrast_moments_match_numpy():
    n = 1200
    x = (0.35 + 0.3 * np.random.default_rng(10).random((n, 3, 3, 3, 1))).astype(np.float32)  # no clipping
    layer = aug.RandomBrightnessContrast3D(0.5, brightness=0.1, contrast=0.25, seed=11)
    for y in (_np(layer(x)), T.random_brightness_contrast(x, np.random.default_rng(12), 0.5, 0.1, 0.25)):
        applied, c, b = _color_params(x, y)
        _within(applied.mean(), 0.5, n)
        m = applied.sum()
        # U(0.75, 1.25): mean 1, sd 0.5 / sqrt(12); U(-0.1, 0.1): mean 0, sd 0.2 / sqrt(12)
        assert abs(c.mean() - 1) <= 4.5 * 0.144 / np.sqrt(m) and abs(c.std() - 0.144) <= 0.02
        assert abs(b.mean()) <= 4.5 * 0.0577 / np.sqrt(m) and abs(b.std() - 0.0577) <= 0.008
        assert 0.75 - 1e-3 <= c.min() and c.max() <= 1.25 + 1e-3 and np.abs(b).max() <= 0.1 + 1e-4


def test_zoom_factors_match_numpy():
    n = 500
    ramp = 0.5 + 0.05 * (np.arange(9) - 4)  # linear along axis 1: the zoom's slope is 1 / factor
    x = np.broadcast_to(ramp[:, None, None, None], (n, 9, 9, 9, 1)).astype(np.float32).copy()
    for y in (_np(aug.RandomZoom3D(0.2, seed=13)(x)), T.random_zoom(x, np.random.default_rng(14), 0.2)):
        applied = ~np.all(np.isclose(x, y, atol=1e-6), axis=(1, 2, 3, 4))
        _within(applied.mean(), 0.2, n)
        slope = (y[applied, 5, 4, 4, 0] - y[applied, 3, 4, 4, 0]) / 2
        log_f = np.log(0.05 / slope)
        lo, hi = np.log(0.8), np.log(1.25)
        assert lo - 1e-4 <= log_f.min() and log_f.max() <= hi + 1e-4
        sd = (hi - lo) / np.sqrt(12)
        assert abs(log_f.mean()) <= 4.5 * sd / np.sqrt(len(log_f)) and abs(log_f.std() - sd) <= 0.03


def test_seeded_and_serializable():
    x = np.random.default_rng(15).random((4, 4, 4, 4, 2)).astype(np.float32)
    a, b = aug.ExemplarAugment3D(seed=7), aug.ExemplarAugment3D(seed=7)
    np.testing.assert_allclose(_np(a(x)), _np(b(x)))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(a))
    assert isinstance(clone, aug.ExemplarAugment3D) and clone.get_config() == a.get_config()
    zoom = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(aug.RandomZoom3D(0.3, (0.9, 1.1))))
    assert (zoom.p, zoom.scale) == (0.3, (0.9, 1.1))
    y = _np(a(x))
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("cls", [Exemplar, SimCLR])
def test_tasks_augment_on_the_device_when_asked(cls):
    encoder = Encoder3D(in_channels=1, filters=(2, 4))
    auto = cls(encoder, augment_on="auto", **cls.small_hparams)
    assert auto.augment_on == "host" and "numpy" in auto.augment_note  # no accelerator in the test machines
    task = cls(Encoder3D(in_channels=1, filters=(2, 4)), augment_on="device", **cls.small_hparams)
    assert task.augment_on == "device" and task.get_config()["augment_on"] == "device"
    assert auto.get_config()["augment_on"] == "auto"  # decided again where it is loaded (no weights differ)
    batch = np.random.default_rng(0).random((2, 8, 8, 8, 1)).astype(np.float32)
    inputs, targets = task.transform(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(inputs[0], batch)
    np.testing.assert_array_equal(inputs[1], batch)  # the host only streams
    task.compile()
    loss = task.train_on_batch(list(inputs), targets)
    assert np.isfinite(np.asarray(loss)).all()
    with pytest.raises(ConfigError, match="augment_on must be one of host, device, auto"):
        cls(Encoder3D(in_channels=1, filters=(2, 4)), augment_on="gpu")


def test_a_device_augmented_task_round_trips_as_a_keras_file(tmp_path):
    task = Exemplar(Encoder3D(in_channels=1, filters=(2, 4)), augment_on="device", **Exemplar.small_hparams)
    task.save(tmp_path / "exemplar.keras")
    loaded = keras.saving.load_model(tmp_path / "exemplar.keras")  # safe_mode: registered layers only
    assert loaded.augment_on == "device" and isinstance(loaded.get_layer("augment"), aug.ExemplarAugment3D)
    batch = np.random.default_rng(1).random((2, 8, 8, 8, 1)).astype(np.float32)
    codes = _np(loaded.predict_on_batch([batch, batch]))
    assert codes.shape == (2, 3, Exemplar.small_hparams["code_size"]) and np.isfinite(codes).all()
