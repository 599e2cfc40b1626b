"""Genesis, MAE and SimCLR learn on held-out synthetic BraTS-like volumes (TensorFlow, seconds).

Each test trains a tiny U-Net / encoder on 16 volumes of 16^3 x 4 channels
(``keras_ssl3d.data.synthetic``) and measures on 4-8 other volumes, against the trivial baseline:
Genesis must restore better than returning the distorted input; MAE must fill the masked voxels
better than each volume's mean visible intensity; SimCLR must retrieve the partner view far
above chance (and better than before training).
"""

import keras
import numpy as np
import pytest

from keras_ssl3d import Encoder3D
from keras_ssl3d.data.synthetic import brats_like_arrays
from keras_ssl3d.losses import MaskedMSE
from keras_ssl3d.losses.contrastive import info_nce_accuracy
from keras_ssl3d.tasks import MAE, Genesis, SimCLR


@pytest.fixture(scope="module")
def volumes():
    train = brats_like_arrays(16, (16, 16, 16), seed=0)[0]
    held_out = brats_like_arrays(8, (16, 16, 16), seed=1)[0]
    return train, held_out


def _fit(task, train, batch_size, epochs):
    task.compile(learning_rate=3e-3)
    task.fit(task.dataset(train, batch_size=batch_size, seed=0), epochs=epochs, verbose=0)


def _predict(task, x):
    return keras.ops.convert_to_numpy(task.predict(x, batch_size=4, verbose=0))


def test_genesis_restores_better_than_the_distorted_input(volumes):
    train, held_out = volumes
    task = Genesis(Encoder3D(in_channels=4, filters=(8, 16)))
    distorted, original = task.transform(held_out[:4], np.random.default_rng(123))
    _fit(task, train, batch_size=4, epochs=6)
    error = float(np.mean((_predict(task, distorted) - original) ** 2))
    baseline = float(np.mean((distorted - original) ** 2))
    print(f"\ngenesis held-out MSE {error:.4f} vs distorted input {baseline:.4f}")
    assert error < 0.6 * baseline


def test_mae_fills_masked_voxels_better_than_the_mean_intensity(volumes):
    train, held_out = volumes
    task = MAE(Encoder3D(in_channels=4, filters=(8, 16)), patch_size=4, mask_ratio=0.5)
    masked, target = task.transform(held_out[:4], np.random.default_rng(123))
    original, mask = target[..., :-1], target[..., -1:]
    visible = 1 - mask
    mean = (original * visible).sum(axis=(1, 2, 3), keepdims=True) / visible.sum(axis=(1, 2, 3), keepdims=True)
    _fit(task, train, batch_size=4, epochs=16)
    error = float(MaskedMSE()(target, _predict(task, masked)))
    baseline = float(MaskedMSE()(target, np.broadcast_to(mean, original.shape)))
    print(f"\nmae held-out masked-voxel MSE {error:.4f} vs per-volume mean intensity {baseline:.4f}")
    assert error < 0.9 * baseline


def test_simclr_retrieves_the_partner_view(volumes):
    train, held_out = volumes
    task = SimCLR(Encoder3D(in_channels=4, filters=(8, 16)), projection_dim=32, hidden_units=32)
    views, targets = task.transform(held_out, np.random.default_rng(123))   # 8 volumes: 16 views

    def top1():
        return float(np.mean(keras.ops.convert_to_numpy(info_nce_accuracy(targets, task.predict(views, verbose=0)))))

    before = top1()
    _fit(task, train, batch_size=8, epochs=6)
    after = top1()
    print(f"\nsimclr held-out top-1 partner retrieval {before:.3f} -> {after:.3f} (chance {1 / 15:.3f})")
    assert after >= 0.4 and after > before  # chance: 1 / 15 = 0.067
