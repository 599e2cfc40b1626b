"""``TaskDataset``: unlabeled samples -> shuffled batches -> a task's transform, for ``fit``.

Batch order and augmentation randomness are pure functions of ``(seed, epoch, batch index)``,
so a resumed run (``TrainingRun`` calls ``set_epoch``) sees exactly the batches an uninterrupted
run would, and batches may be prepared in any order or in parallel workers.
"""

import keras
import numpy as np


class TaskDataset(keras.utils.PyDataset):
    """Batches of ``transform(samples[batch], rng)``.

    Args:
        samples: an array ``(N, *spatial, C)`` or any indexable of per-sample arrays.
        transform: ``callable(batch, rng) -> (inputs, targets)``.
        batch_size: samples per batch; the last incomplete batch is dropped (contrastive and
            triplet batches need a full set of negatives).
        seed: base seed of the shuffling and of the transform's randomness.
        shuffle: reshuffle the samples every epoch.
    """

    def __init__(self, samples, transform, batch_size=2, seed=0, shuffle=True, **kwargs):
        super().__init__(**kwargs)
        self.samples = samples
        self.transform = transform
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        if len(samples) < 1:
            raise ValueError("no samples to train on")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def __len__(self):
        return max(1, len(self.samples) // self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1

    def order(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.samples))

    def __getitem__(self, index):
        if index >= len(self):
            raise IndexError(index)
        epoch = self.epoch
        idx = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        if isinstance(self.samples, np.ndarray):
            batch = self.samples[idx]
        else:
            batch = np.stack([np.asarray(self.samples[int(i)]) for i in idx])
        rng = np.random.default_rng([self.seed, epoch, int(index), 1])
        return self.transform(np.asarray(batch, dtype=np.float32), rng)
