"""Task models on every backend: build, forward, loss, one train step, `.keras` round trip."""

import inspect

import keras
import numpy as np
import pytest

from keras_ssl3d import Encoder2D, Encoder3D
from keras_ssl3d.tasks import CPC, RPL, TASKS, Exemplar, Jigsaw, Rotation
from tests.helpers import to_numpy

pytestmark = pytest.mark.multibackend

SIZE = {3: 16, 2: 32}


def _encoder(dims):
    if dims == 3:
        return Encoder3D(in_channels=1, filters=(4, 8))
    return Encoder2D(in_channels=3, blocks=(1, 1), growth_rate=4, stem_filters=8)


def _task(name, dims):
    encoder = _encoder(dims)
    kwargs = {"hidden_units": 16} if name in ("rotation", "jigsaw", "rpl", "exemplar") else {"code_size": 16}
    if name in ("jigsaw", "rpl", "cpc"):
        kwargs["input_size"] = SIZE[dims]
        kwargs["jitter"] = 1
    if name == "jigsaw":
        kwargs["num_permutations"] = 12
    if name == "exemplar":
        kwargs["code_size"] = 16
    return TASKS[name](encoder, **kwargs), encoder


def _batch(dims, n=3):
    rng = np.random.default_rng(0)
    shape = (n, *(SIZE[dims],) * dims, 1 if dims == 3 else 3)
    return rng.random(shape, dtype=np.float32)


EXPECTED_OUTPUT = {
    ("rotation", 3): (3, 10), ("rotation", 2): (3, 4),
    ("jigsaw", 3): (3, 12), ("jigsaw", 2): (3, 12),
    ("rpl", 3): (3, 26), ("rpl", 2): (3, 8),
    ("exemplar", 3): (3, 3, 16), ("exemplar", 2): (3, 3, 16),
}


@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("name", ["cpc", "rpl", "jigsaw", "rotation", "exemplar"])  # the others: test_tasks_new.py
def test_forward_loss_and_train_step(name, dims):
    task, encoder = _task(name, dims)
    assert task.encoder is encoder and task.rank == dims
    per_sample = {"rotation": 1, "exemplar": 2, "rpl": 2, "cpc": 4 ** dims, "jigsaw": 3 ** dims}[name]
    assert task.encoder_inputs_per_sample == per_sample  # what --micro-batches cuts into parts
    task.compile()
    assert np.isclose(float(to_numpy(task.optimizer.learning_rate)), 1e-3 if dims == 3 else 5e-4)
    inputs, targets = task.make_transform(seed=0)(_batch(dims))
    outputs = to_numpy(task(inputs, training=False))
    if name == "cpc":
        grid = 4 ** dims
        queries = len(task.target_indices)
        assert outputs.shape == (3, queries, 3 * grid) and targets.shape == (3, queries)
        assert np.abs(outputs).max() <= 1.0 + 1e-5  # cosine similarities
    else:
        assert outputs.shape == EXPECTED_OUTPUT[(name, dims)]
    if name in ("rotation", "jigsaw", "rpl"):
        np.testing.assert_allclose(outputs.sum(-1), 1.0, rtol=1e-4)  # softmax over the classes
    loss = float(to_numpy(task.loss(targets, outputs)))
    assert np.isfinite(loss) and loss > 0
    before = [to_numpy(w).copy() for w in encoder.trainable_weights]
    logs = task.train_on_batch(inputs, targets, return_dict=True)
    assert np.isfinite(logs["loss"]) and "accuracy" in logs
    after = [to_numpy(w) for w in encoder.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))  # the encoder itself learns
    # the trained encoder is a plain encoder, usable at another input size
    other = _batch(dims, n=1)[:, :8, :8] if dims == 3 else np.zeros((1, 40, 40, 3), np.float32)
    assert to_numpy(task.encoder(other)).shape[0] == 1


@pytest.mark.parametrize("name,dims", [("rotation", 3), ("jigsaw", 3), ("rpl", 2), ("cpc", 3), ("exemplar", 2)])
def test_keras_round_trip(name, dims, tmp_path):
    task, _ = _task(name, dims)
    task.compile()
    inputs, targets = task.make_transform(seed=1)(_batch(dims))
    task.train_on_batch(inputs, targets)
    path = tmp_path / f"{name}{dims}.keras"
    task.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(task)
    assert type(restored.encoder) is type(task.encoder)
    assert restored.get_config() == task.get_config()
    np.testing.assert_allclose(to_numpy(restored(inputs, training=False)), to_numpy(task(inputs, training=False)),
                               rtol=1e-4, atol=1e-5)
    assert restored.optimizer is not None and type(restored.loss) is type(task.loss)
    weights = tmp_path / "w.weights.h5"
    task.save_weights(weights)
    fresh, _ = _task(name, dims)
    fresh.load_weights(weights)
    np.testing.assert_allclose(to_numpy(fresh(inputs, training=False)), to_numpy(task(inputs, training=False)),
                               rtol=1e-4, atol=1e-5)


def test_defaults_follow_the_paper():
    enc = Encoder3D(filters=(4, 8))
    assert Jigsaw(enc, hidden_units=8).num_permutations == 1000
    assert Jigsaw(enc, hidden_units=8).patch_shape == (39, 39, 39)
    assert RPL(enc, hidden_units=8).num_positions == 26
    assert Rotation(enc, hidden_units=8).num_classes == 10
    cpc = CPC(enc, code_size=8)
    assert cpc.embedding_dim == 64 and cpc.patch_shape == (29, 29, 29)
    defaults = {cls: inspect.signature(cls).parameters for cls in (CPC, Exemplar)}
    assert defaults[CPC]["code_size"].default == 1024 and defaults[Exemplar]["code_size"].default == 1024
    assert defaults[Exemplar]["margin"].default == 1.0
    enc2 = Encoder2D(blocks=(1, 1), growth_rate=4, stem_filters=8)
    assert Jigsaw(enc2, hidden_units=8).num_permutations == 100
    assert RPL(enc2, hidden_units=8).num_positions == 8 and Rotation(enc2, hidden_units=8).num_classes == 4


def test_wrong_encoder_is_a_clear_error():
    from keras_ssl3d.errors import ConfigError

    with pytest.raises(ConfigError, match="Encoder3D or Encoder2D"):
        Rotation(keras.Sequential([keras.layers.Dense(2)]))
