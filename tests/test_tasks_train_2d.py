"""Each 2D pretext task learns its task on small structured images (TensorFlow, a few epochs)."""

import numpy as np

from keras_ssl3d import Encoder2D
from keras_ssl3d.tasks import CPC, RPL, Exemplar, Jigsaw, Rotation
from tests.helpers import structured_samples


def _train(task, samples, batch_size, epochs, learning_rate=3e-3):
    task.compile(learning_rate=learning_rate)
    history = task.fit(task.dataset(samples, batch_size=batch_size, seed=0), epochs=epochs, verbose=0).history
    accuracy = float(np.mean(history["accuracy"][-2:]))
    print(f"\n{task.name} 2D: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}, "
          f"accuracy (last 2 epochs) {accuracy:.3f}")
    assert history["loss"][-1] < 0.9 * history["loss"][0]
    return accuracy


def _encoder():
    return Encoder2D(in_channels=3, blocks=(1, 1), growth_rate=8, stem_filters=16)


def test_rotation_2d_learns():
    task = Rotation(_encoder(), hidden_units=64)
    accuracy = _train(task, structured_samples(64, 32, 2), batch_size=16, epochs=5)
    assert accuracy >= 0.5  # chance: 0.25


def test_jigsaw_2d_learns():
    task = Jigsaw(_encoder(), input_size=48, num_permutations=10, hidden_units=64)
    assert task.patch_shape == (13, 13)
    accuracy = _train(task, structured_samples(64, 48, 2), batch_size=16, epochs=5)
    assert accuracy >= 0.4  # chance: 0.1


def test_rpl_2d_learns():
    task = RPL(_encoder(), input_size=48, hidden_units=64)
    accuracy = _train(task, structured_samples(128, 48, 2), batch_size=32, epochs=6)
    assert accuracy >= 0.3  # chance: 1/8


def test_cpc_2d_learns():
    task = CPC(_encoder(), input_size=48, code_size=64)
    accuracy = _train(task, structured_samples(64, 48, 2), batch_size=16, epochs=8)
    assert accuracy >= 10 / (16 * 16)  # chance: one true patch among 16 images x 16 patches


def test_exemplar_2d_learns():
    task = Exemplar(_encoder(), code_size=64, hidden_units=64)
    accuracy = _train(task, structured_samples(64, 32, 2), batch_size=16, epochs=6)
    assert accuracy >= 0.7  # chance: 0.5
