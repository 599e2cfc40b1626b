"""Each 3D pretext task learns its task on small structured volumes (TensorFlow, a few epochs).

The volumes (``helpers.structured_samples``) carry one intensity ramp per axis, per-sample
offsets and smooth blobs: enough structure for every pretext task to be solvable, so accuracy
well above chance after a short training shows the task, its transform and its loss fit together.
"""

import numpy as np
import pytest

from keras_ssl3d import Encoder3D
from keras_ssl3d.tasks import CPC, RPL, Exemplar, Jigsaw, Rotation
from tests.helpers import structured_samples


def _train(task, samples, batch_size, epochs, learning_rate=3e-3):
    task.compile(learning_rate=learning_rate)
    history = task.fit(task.dataset(samples, batch_size=batch_size, seed=0), epochs=epochs, verbose=0).history
    accuracy = float(np.mean(history["accuracy"][-2:]))
    print(f"\n{task.name}: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}, "
          f"accuracy (last 2 epochs) {accuracy:.3f}")
    assert history["loss"][-1] < 0.9 * history["loss"][0]
    return accuracy


def _encoder():
    return Encoder3D(in_channels=3, filters=(8, 16))


def test_rotation_3d_learns():
    task = Rotation(_encoder(), hidden_units=64)
    accuracy = _train(task, structured_samples(32, 16, 3), batch_size=8, epochs=8)
    assert accuracy >= 0.3  # chance: 0.1


def test_jigsaw_3d_learns():
    task = Jigsaw(_encoder(), input_size=24, num_permutations=10, hidden_units=64)
    assert task.patch_shape == (5, 5, 5)
    accuracy = _train(task, structured_samples(32, 24, 3), batch_size=8, epochs=4)
    assert accuracy >= 0.4  # chance: 0.1


def test_rpl_3d_learns():
    task = RPL(_encoder(), input_size=24, hidden_units=64)
    accuracy = _train(task, structured_samples(128, 24, 3), batch_size=32, epochs=8)
    assert accuracy >= 0.15  # chance: 1/26 = 0.038


def test_cpc_3d_learns():
    task = CPC(_encoder(), input_size=16, jitter=1, code_size=64)
    accuracy = _train(task, structured_samples(32, 16, 3), batch_size=8, epochs=8)
    assert accuracy >= 10 / (8 * 64)  # chance: one true patch among 8 volumes x 64 patches


def test_exemplar_3d_learns():
    task = Exemplar(_encoder(), code_size=64, hidden_units=64)
    # in-batch negatives: smaller batches (more steps) at the paper's 3D learning rate
    accuracy = _train(task, structured_samples(24, 12, 3), batch_size=4, epochs=8, learning_rate=1e-3)
    assert accuracy >= 0.7  # chance: 0.5
