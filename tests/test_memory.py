"""Memory remedies: rematerialised residual blocks (same numbers, saved in the config), micro-batches and
Exemplar's in-batch negatives (the triplet loss against a hand computation)."""

import keras
import numpy as np
import pytest

from keras_ssl3d import Encoder3D, Segmenter3D, set_remat
from keras_ssl3d.losses import TripletLoss
from keras_ssl3d.tasks import Exemplar
from tests.helpers import random_volumes, to_numpy

pytestmark = pytest.mark.multibackend


def _one_sgd_step(remat, norm):
    """Loss, gradients (SGD with lr 1: w0 - w1) and non-trainable state after one step."""
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=1, filters=(4, 8), norm=norm, remat=remat)
    model = keras.Sequential([encoder, keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = random_volumes(n=2, size=8) * 3 + 1  # far from BN's initial moving stats (0, 1)
    y = np.array([0, 2])
    before = [to_numpy(w) for w in model.trainable_weights]
    loss = float(to_numpy(model.train_on_batch(x, y)))
    grads = [b - to_numpy(w) for b, w in zip(before, model.trainable_weights)]
    state = [to_numpy(w) for w in model.non_trainable_weights]
    return loss, grads, state


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_remat_gives_the_same_loss_gradients_and_moving_statistics(norm):
    loss, grads, state = _one_sgd_step(False, norm)
    loss_r, grads_r, state_r = _one_sgd_step(True, norm)
    assert np.isclose(loss, loss_r, rtol=1e-5)
    assert len(grads) == len(grads_r) and max(float(np.abs(g).max()) for g in grads) > 1e-4
    for g, g_r in zip(grads, grads_r):
        np.testing.assert_allclose(g_r, g, rtol=1e-4, atol=1e-6)
    # BatchNorm's moving statistics move once per step (the recomputation must not update them again)
    for s, s_r in zip(state, state_r):
        np.testing.assert_allclose(s_r, s, rtol=1e-5, atol=1e-6)
    if norm == "batch":
        assert any(np.abs(s).max() > 0.05 and not np.allclose(s, 1.0) for s in state)  # the stats did move


def test_remat_is_saved_in_the_config_and_survives_a_keras_round_trip(tmp_path):
    encoder = Encoder3D(in_channels=1, filters=(4, 8), remat=True)
    model = Segmenter3D(encoder, num_classes=2)
    assert model.remat and model.decoder.remat and all(b.remat for b in model.decoder.blocks)
    x = random_volumes(n=1, size=16)
    expected = to_numpy(model(x, training=False))
    model.save(tmp_path / "seg.keras")
    loaded = keras.saving.load_model(tmp_path / "seg.keras")
    assert loaded.encoder.remat and loaded.get_config()["remat"] is True
    assert loaded.encoder.get_layer("level1_block1").remat
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), expected, rtol=1e-5, atol=1e-6)

    set_remat(loaded, False)  # e.g. a loaded pretrained encoder: switch it for fine-tuning
    assert not loaded.remat and not loaded.encoder.remat
    assert not any(b.remat for b in loaded.decoder.blocks)
    assert loaded.encoder.get_config()["remat"] is False


def test_a_remat_scope_turns_block_remat_on():
    with keras.RematScope(mode="full"):
        encoder = Encoder3D(in_channels=1, filters=(4, 8))
    assert encoder.remat and encoder.get_layer("level2_block1").remat
    assert not Encoder3D(in_channels=1, filters=(4, 8)).remat


def test_exemplar_negatives_are_other_samples_and_the_loss_matches_a_hand_computation():
    task = Exemplar(Encoder3D(in_channels=1, filters=(4, 8)), code_size=8, hidden_units=8)
    assert [i.name for i in task.inputs] == ["anchor", "positive"]
    (anchor, positive), targets = task.make_transform(seed=0)(random_volumes(n=3, size=8, seed=1))
    codes = to_numpy(task([anchor, positive], training=False))
    assert codes.shape == (3, 3, 8)

    def encode(x):  # the shared encoder and head, one branch at a time, by hand
        pooled = to_numpy(task.encoder(x, training=False)).mean(axis=(1, 2, 3))
        c = to_numpy(task.get_layer("head")(pooled))
        return c / np.linalg.norm(c, axis=-1, keepdims=True)

    a, p = encode(anchor), encode(positive)
    n = p[[2, 0, 1]]  # sample i's negative: sample i-1's positive
    np.testing.assert_allclose(codes[:, 0], a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(codes[:, 1], p, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(codes[:, 2], n, rtol=1e-4, atol=1e-5)
    d_pos = ((a - p) ** 2).sum(-1)
    d_neg = ((a - n) ** 2).sum(-1)
    expected = np.maximum(d_pos - d_neg + 1.0, 0.0).mean()
    assert np.isclose(float(to_numpy(TripletLoss(margin=1.0)(targets, codes))), expected, rtol=1e-4, atol=1e-6)


def test_exemplar_with_in_batch_negatives_round_trips(tmp_path):
    task = Exemplar(Encoder3D(in_channels=1, filters=(4, 8), remat=True), code_size=8, hidden_units=8)
    inputs, _ = task.make_transform(seed=0)(random_volumes(n=2, size=8))
    expected = to_numpy(task(inputs, training=False))
    task.save(tmp_path / "exemplar.keras")
    loaded = keras.saving.load_model(tmp_path / "exemplar.keras")
    assert loaded.encoder.remat
    np.testing.assert_allclose(to_numpy(loaded(inputs, training=False)), expected, rtol=1e-5, atol=1e-6)


def _exemplar_step(micro_batches, norm, remat=False):
    """Loss, gradients (SGD with lr 1) and non-trainable state after one Exemplar step, batch 3 (6 volumes)."""
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=1, filters=(4, 8), norm=norm, micro_batches=micro_batches, remat=remat)
    task = Exemplar(encoder, code_size=8, hidden_units=8)
    task.compile(optimizer=keras.optimizers.SGD(1.0))
    inputs, targets = task.make_transform(seed=0)(random_volumes(n=3, size=8, seed=1) * 3 + 1)
    before = [to_numpy(w) for w in task.trainable_weights]
    loss = float(to_numpy(task.train_on_batch(inputs, targets))[0])
    grads = [b - to_numpy(w) for b, w in zip(before, task.trainable_weights)]
    return loss, grads, [to_numpy(w) for w in task.non_trainable_weights]


@pytest.mark.parametrize("remat", [False, True])
def test_micro_batches_keep_the_loss_and_gradients_of_a_coupled_loss(remat):
    """Exemplar's negatives come from the other samples: the parts must still form one loss (also with
    the blocks' own remat nested inside the parts)."""
    loss, grads, _ = _exemplar_step(1, "group")
    loss_m, grads_m, _ = _exemplar_step(4, "group", remat=remat)  # 6 volumes in parts of 1, 2, 1, 2
    assert np.isclose(loss, loss_m, rtol=1e-5) and loss > 0.1
    assert max(float(np.abs(g).max()) for g in grads) > 1e-4
    for g, g_m in zip(grads, grads_m):
        np.testing.assert_allclose(g_m, g, rtol=1e-4, atol=1e-6)


def _parts_step(micro_batches):
    """One SGD step of encoder -> pooling -> dense with a loss that couples the samples (softmax over
    the batch). ``micro_batches=None``: the reference, the plain encoder called once per part by hand."""
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=1, filters=(4, 8), micro_batches=micro_batches or 1)
    volumes = keras.Input((8, 8, 8, 1), batch_size=4)
    if micro_batches:
        features = encoder(volumes)
    else:  # parts [0:1], [1:2], [2:4]... of 4 samples in 3 parts: (k * 4) // 3 -> 0, 1, 2, 4
        features = keras.layers.Concatenate(axis=0)([encoder(volumes[a:b, ...]) for a, b in ((0, 1), (1, 2), (2, 4))])
    scores = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling3D()(features))
    model = keras.Model(volumes, keras.ops.reshape(scores, (1, 4)))
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = random_volumes(n=4, size=8, seed=2) * 3 + 1
    before = [to_numpy(w) for w in model.trainable_weights]
    loss = float(to_numpy(model.train_on_batch(x, np.array([2]))))
    grads = [b - to_numpy(w) for b, w in zip(before, model.trainable_weights)]
    return loss, grads, [to_numpy(w) for w in model.non_trainable_weights]


def test_micro_batches_with_batch_norm_equal_one_call_per_part():
    loss, grads, state = _parts_step(None)
    loss_m, grads_m, state_m = _parts_step(3)
    assert np.isclose(loss, loss_m, rtol=1e-5)
    for g, g_m in zip(grads, grads_m):
        np.testing.assert_allclose(g_m, g, rtol=1e-4, atol=1e-6)
    # the moving statistics move once per part, as in the three calls (and not again in the recomputation)
    for s, s_m in zip(state, state_m):
        np.testing.assert_allclose(s_m, s, rtol=1e-5, atol=1e-6)
    assert any(np.abs(s).max() > 0.05 and not np.allclose(s, 1.0) for s in state)
    whole_loss, whole_grads, _ = _parts_step(1)  # batch statistics of the whole batch: another step
    assert max(float(np.abs(g - g_m).max()) for g, g_m in zip(whole_grads, grads_m)) > 1e-4


def test_micro_batches_are_saved_switchable_and_checked(tmp_path):
    from keras_ssl3d import ConfigError, set_micro_batches

    task = Exemplar(Encoder3D(in_channels=1, filters=(4, 8), micro_batches=2), code_size=8, hidden_units=8)
    task.save(tmp_path / "exemplar.keras")
    loaded = keras.saving.load_model(tmp_path / "exemplar.keras")
    assert loaded.encoder.micro_batches == 2 and loaded.encoder.get_config()["micro_batches"] == 2
    assert set_micro_batches(loaded, 1).encoder.micro_batches == 1
    with pytest.raises(ConfigError, match="positive"):
        Encoder3D(in_channels=1, filters=(4, 8), micro_batches=0)
    encoder = Encoder3D(in_channels=1, filters=(4, 8), micro_batches=3)
    with pytest.raises(ConfigError, match="at least 3 samples"):
        encoder(random_volumes(n=2, size=8), training=True)
    np.testing.assert_allclose(to_numpy(encoder(random_volumes(n=2, size=8), training=False)).shape, (2, 4, 4, 4, 8))
