"""Genesis, MAE and SimCLR on every backend: transforms against hand computations, shapes, losses,
a train step and the `.keras` / weights round trip."""

import keras
import numpy as np
import pytest

from keras_ssl3d import Encoder2D, Encoder3D
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.losses import InfoNCE, MaskedMSE
from keras_ssl3d.tasks import MAE, Genesis, SimCLR, make_task
from keras_ssl3d.tasks.genesis import bezier_mapping, in_paint, local_shuffle, nonlinear_intensity, out_paint
from keras_ssl3d.tasks.mae import patch_mask
from keras_ssl3d.tasks.simclr import NTXentScores
from tests.helpers import to_numpy

pytestmark = pytest.mark.multibackend


def _encoder(dims=3, channels=2):
    if dims == 3:
        return Encoder3D(in_channels=channels, filters=(4, 8))
    return Encoder2D(in_channels=3, blocks=(1, 1), growth_rate=4, stem_filters=8)


def _batch(n=3, dims=3, size=16, channels=2, seed=0):
    return np.random.default_rng(seed).random((n, *(size,) * dims, channels), dtype=np.float32)


# --- Genesis transforms ----------------------------------------------------------------------

def test_bezier_mapping_is_the_cubic_curve_monotone_and_fixes_0_and_1():
    p1, p2 = (0.9, 0.1), (0.2, 0.7)
    xs, ys = bezier_mapping([p1, p2], num=101)
    # t = 0.5 by hand: (P0 + 3 P1 + 3 P2 + P3) / 8
    assert np.isclose(xs[50], (0 + 3 * 0.9 + 3 * 0.2 + 1) / 8) and np.isclose(ys[50], (0 + 3 * 0.1 + 3 * 0.7 + 1) / 8)
    for points in np.random.default_rng(0).random((50, 2, 2)):  # any control points in the unit square
        xs, ys = bezier_mapping(points)
        v = np.interp(np.linspace(0, 1, 201), xs, ys)
        assert np.all(np.diff(v) >= -1e-12) and v[0] == 0.0 and v[-1] == 1.0


def test_nonlinear_intensity_and_its_inversion():
    v = np.linspace(0, 1, 101, dtype=np.float32).reshape(101, 1)
    up = nonlinear_intensity(v, np.random.default_rng(3), invert_p=0.0)
    down = nonlinear_intensity(v, np.random.default_rng(3), invert_p=1.0)
    assert up.dtype == np.float32 and up[0, 0] == 0 and up[-1, 0] == 1 and np.all(np.diff(up[:, 0]) >= 0)
    np.testing.assert_allclose(down, 1 - up, atol=1e-6)  # same curve, inverted
    assert np.abs(up - v).max() > 0.01  # not the identity


def test_local_shuffle_keeps_each_blocks_voxels():
    volume = _batch(1, size=12)[0]                   # distinct values; 2 channels move together
    out = local_shuffle(volume, np.random.default_rng(0), sides=[3, 2, 4], starts=[1, 0, 0])
    assert out.shape == volume.shape and not np.array_equal(out, volume)
    region = (slice(1, 10), slice(0, 12), slice(0, 12))
    outside = np.ones(volume.shape[:-1], bool)
    outside[region] = False
    np.testing.assert_array_equal(out[outside], volume[outside])  # voxels outside whole blocks stay
    for i in range(1, 10, 3):
        for j in range(0, 12, 2):
            for k in range(0, 12, 4):
                block = (slice(i, i + 3), slice(j, j + 2), slice(k, k + 4))
                before = sorted(map(tuple, volume[block].reshape(-1, 2)))
                after = sorted(map(tuple, out[block].reshape(-1, 2)))
                assert before == after           # the same multiset of (channel 0, channel 1) voxels
    random_tiling = local_shuffle(volume, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(random_tiling, axis=None), np.sort(volume, axis=None))


def _box_of(mask):
    idx = np.nonzero(mask)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return box, [b.stop - b.start for b in box]


def test_in_painting_fills_one_box_with_noise():
    volume = np.full((24, 24, 24, 1), 2.0, np.float32)   # outside the noise range [0, 1)
    out = in_paint(volume, np.random.default_rng(0), max_boxes=1)
    changed = out[..., 0] != 2.0
    box, sides = _box_of(changed)
    assert changed[box].all() and changed.sum() == np.prod(sides)  # exactly one box
    assert all(24 // 6 <= s <= 24 // 3 for s in sides)
    assert out[changed].min() >= 0 and out[changed].max() < 1


def test_out_painting_keeps_one_box_and_fills_the_rest():
    volume = np.full((28, 28, 28, 1), 2.0, np.float32)
    out = out_paint(volume, np.random.default_rng(0), max_boxes=1)
    kept = out[..., 0] == 2.0
    box, sides = _box_of(kept)
    assert kept[box].all() and kept.sum() == np.prod(sides)
    assert all(3 * 28 // 7 <= s <= 4 * 28 // 7 for s in sides)
    assert out[~kept].max() < 1


def test_genesis_transform_and_model():
    task = Genesis(_encoder())
    batch = _batch()
    distorted, target = task.make_transform(seed=0)(batch)
    np.testing.assert_array_equal(target, batch)  # the original is the target
    assert distorted.shape == batch.shape and not np.array_equal(distorted, batch)
    untouched = Genesis(_encoder(), local_shuffle_p=0, nonlinear_p=0, paint_p=0)
    np.testing.assert_array_equal(untouched.transform(batch, np.random.default_rng(0))[0], batch)
    restored = to_numpy(task(distorted))
    assert restored.shape == batch.shape and restored.min() >= 0 and restored.max() <= 1  # sigmoid
    assert task.pretrained_model() is task.unet and task.unet.encoder is task.encoder


# --- MAE --------------------------------------------------------------------------------------

def test_mae_mask_ratio_is_exact_and_patchwise():
    rng = np.random.default_rng(0)
    mask = patch_mask(4, (16, 16, 8), rng, mask_ratio=0.75, patch_size=4)    # 4 x 4 x 2 = 32 patches
    assert mask.shape == (4, 16, 16, 8)
    patches = mask.reshape(4, 4, 4, 4, 4, 2, 4)
    assert np.all(patches.min(axis=(2, 4, 6)) == patches.max(axis=(2, 4, 6)))  # constant per patch
    np.testing.assert_array_equal(patches[:, :, 0, :, 0, :, 0].reshape(4, -1).sum(1), [24] * 4)  # int(.75*32)
    assert not np.array_equal(mask[0], mask[1])  # drawn per sample
    ragged = patch_mask(2, (10, 8, 8), rng, mask_ratio=0.5, patch_size=4)   # 3 x 2 x 2 patches, last one 2 thick
    assert ragged.shape == (2, 10, 8, 8)
    with pytest.raises(ConfigError, match="patch_size"):
        patch_mask(1, (8, 8, 8), rng, patch_size=16)


def test_mae_transform_loss_and_model():
    task = MAE(_encoder(), patch_size=4)
    assert (task.mask_ratio, MAE(_encoder()).patch_size) == (0.75, 16)       # Wald et al. 2025
    batch = _batch() + 0.5
    masked, target = task.make_transform(seed=0)(batch)
    mask = target[..., -1:]
    np.testing.assert_array_equal(target[..., :-1], batch)
    assert np.isclose(mask.mean(), 0.75)
    np.testing.assert_array_equal(masked, batch * (1 - mask))              # masked voxels are 0, the rest kept
    prediction = to_numpy(task(masked))
    assert prediction.shape == batch.shape
    # MaskedMSE by hand: the mean squared error over masked voxels and channels, per sample, then averaged
    hand = np.mean([((prediction[i] - batch[i]) ** 2 * mask[i]).sum() / (mask[i].sum() * 2) for i in range(3)])
    assert np.isclose(float(to_numpy(MaskedMSE()(target, prediction))), hand, rtol=1e-5)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MAE(_encoder(), mask_ratio=1.0)


# --- SimCLR -----------------------------------------------------------------------------------

def test_nt_xent_equals_the_hand_computed_value():
    rng = np.random.default_rng(0)
    n, temperature = 3, 0.5
    z = rng.normal(size=(n, 2, 5)).astype(np.float32)                      # (sample, view, dim)
    scores = NTXentScores()(z)
    targets = np.tile([[1, 0]], (n, 1))
    loss = float(to_numpy(InfoNCE(temperature=temperature)(targets, scores)))
    # SimCLR's NT-Xent: views in order z_0a, z_0b, z_1a, ...; l(i, j) = -log e^{s_ij/t} / sum_{k != i} e^{s_ik/t}
    flat = z.reshape(2 * n, 5)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    sim = flat @ flat.T
    terms = []
    for i in range(2 * n):
        j = i + 1 if i % 2 == 0 else i - 1
        others = [k for k in range(2 * n) if k != i]                        # 1 positive + 2N - 2 negatives
        terms.append(-np.log(np.exp(sim[i, j] / temperature) / np.exp(sim[i, others] / temperature).sum()))
    assert np.isclose(loss, np.mean(terms), rtol=1e-5)


@pytest.mark.parametrize("dims", [3, 2])
def test_simclr_views_shapes_and_train_step(dims):
    encoder = _encoder(dims)
    task = make_task("simclr", encoder, projection_dim=8, temperature=0.2)
    assert task.hidden_units == (8 if dims == 3 else encoder.output_channels)  # the encoder's feature width
    batch = _batch(n=4, dims=dims, size=16 if dims == 3 else 32, channels=2 if dims == 3 else 3)
    (view1, view2), targets = task.make_transform(seed=0)(batch)
    assert view1.shape == view2.shape == batch.shape and not np.array_equal(view1, view2)
    np.testing.assert_array_equal(targets, [[1, 0]] * 4)
    scores = to_numpy(task((view1, view2)))
    assert scores.shape == (4, 2, 8)
    own = scores.reshape(8, 8)[np.arange(8), np.arange(8)]
    assert np.all(own < -1e3) and np.abs(np.delete(scores.reshape(8, 8), np.arange(8) * 9)).max() <= 1 + 1e-5
    if dims == 3:  # one train step (2D: the same graph on another encoder)
        task.compile()
        before = [to_numpy(w).copy() for w in encoder.trainable_weights]
        logs = task.train_on_batch((view1, view2), targets, return_dict=True)
        assert np.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
        assert any(not np.allclose(a, to_numpy(b)) for a, b in zip(before, encoder.trainable_weights))
    with pytest.raises(Exception, match="at least 2"):
        task.transform(batch[:1], np.random.default_rng(0))


def test_3d_only_tasks_refuse_2d_encoders():
    with pytest.raises(ConfigError, match="3D"):
        make_task("mae", _encoder(2))
    with pytest.raises(ConfigError, match="3D"):
        Genesis(_encoder(2))


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["genesis", "mae", "simclr"])
def test_keras_and_weights_round_trip(name, tmp_path):
    def build():
        return make_task(name, _encoder(), **({"patch_size": 4} if name == "mae" else {}))

    task = build()
    task.compile()
    inputs, _ = task.make_transform(seed=1)(_batch(n=2))
    task.save(tmp_path / "task.keras")
    restored = keras.saving.load_model(tmp_path / "task.keras", safe_mode=True)
    assert type(restored) is type(task) and restored.get_config() == task.get_config()
    expected = to_numpy(task(inputs, training=False))
    np.testing.assert_allclose(to_numpy(restored(inputs, training=False)), expected, rtol=1e-4, atol=1e-5)
    assert type(restored.loss) is type(task.loss)
    task.save_weights(tmp_path / "w.weights.h5")
    fresh = build()
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(to_numpy(fresh(inputs, training=False)), expected, rtol=1e-4, atol=1e-5)
