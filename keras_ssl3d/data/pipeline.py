"""The one batch pipeline: pretraining, fine-tuning and evaluation batches for ``fit``/``predict``,
streamed from a cache (memory-mapped) or taken from an in-memory array.

The order of epoch ``e`` is a pure function of ``(seed, e)``, and so is the random generator
handed to ``transform`` for each batch: a resumed run sees exactly the batches it would have
seen. Only the batches being prepared are in memory (``workers`` threads, ``max_queue_size``).
"""

from pathlib import Path

import keras
import numpy as np

from keras_ssl3d.data.cache import CachedDataset
from keras_ssl3d.errors import DataError


class ArraySource:
    """In-memory samples ``(N, *spatial, C)`` (and labels) with the ``CachedDataset`` interface."""

    def __init__(self, images, labels=None):
        self._images = images
        self._labels = labels
        if labels is not None and len(labels) != len(images):
            raise DataError(f"{len(images)} images but {len(labels)} labels")

    def __len__(self):
        return len(self._images)

    @property
    def num_channels(self):
        return int(self._images.shape[-1])

    @property
    def spatial_shape(self):
        return tuple(int(n) for n in self._images.shape[1:-1])

    def value_range(self, first=8):
        """``(min, max)`` of the first samples (a cheap check that they are scaled to [0, 1])."""
        head = np.asarray(self._images[:first], dtype=np.float32)
        return (float(head.min()), float(head.max())) if head.size else None

    def image(self, i, out=None):
        if out is None:
            return self._images[i]
        np.copyto(out, self._images[i], casting="unsafe")  # as np.asarray(..., dtype) did
        return out

    def label(self, i):
        return None if self._labels is None else self._labels[i]


class SubsetSource:
    """Subjects ``indices`` of another source, in that order (repeats allowed), read lazily."""

    def __init__(self, source, indices):
        self._source = source
        self._indices = [int(i) for i in indices]

    def __len__(self):
        return len(self._indices)

    def __getattr__(self, name):  # num_channels, spatial_shape, value_range, ... of the whole source
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._source, name)

    def image(self, i, out=None):
        return self._source.image(self._indices[i], out=out)

    def label(self, i):
        return self._source.label(self._indices[i])


def as_source(source):
    """``source`` as an object with ``image(i, out=None)``, ``label(i)``, ``len``, ``num_channels`` and
    ``spatial_shape`` (``image(i, out=a)`` writes the image into ``a`` and returns it)."""
    if isinstance(source, CachedDataset):
        return source
    if isinstance(source, (str, Path)):
        return CachedDataset(source)
    if isinstance(source, tuple) and len(source) == 2:
        return ArraySource(np.asarray(source[0]), np.asarray(source[1]))
    if isinstance(source, np.ndarray):
        if source.ndim not in (4, 5):
            raise DataError(f"expected volumes (N, D, H, W, C) or images (N, H, W, C), got shape {source.shape}")
        return ArraySource(source)
    if hasattr(source, "image") and hasattr(source, "__len__"):
        return source
    raise DataError(f"cannot make batches from {type(source).__name__}; pass a CachedDataset or an array")


class VolumeBatches(keras.utils.PyDataset):
    """``keras.utils.PyDataset`` of volume batches.

    Args:
        source: a :class:`CachedDataset` (or its folder), an :class:`ArraySource`, an array
            ``(N, D, H, W, C)`` (or 2D images ``(N, H, W, C)``), or ``(images, labels)``.
        batch_size: volumes per batch.
        shuffle: shuffle the order every epoch (from ``(seed, epoch)``).
        seed: base seed of the order and of the per-batch ``rng``.
        transform: ``transform(images, rng) -> (x, y)`` (or ``transform(images, labels, rng)`` with
            ``with_labels=True``), e.g. a self-supervised task making its inputs and targets.
        with_labels: without ``transform``, yield ``(images, labels)`` instead of ``(images,)``.
        workers, use_multiprocessing, max_queue_size: as in ``keras.utils.PyDataset`` (threads by
            default: reading memory maps and numpy transforms release the GIL; memory holds at
            most ``max_queue_size`` prepared batches).
        indices: subset of subjects to use (train/validation split).
        drop_remainder: drop the last incomplete batch (constant batch shape: one compiled step).
        shard: ``(index, count)``: serve only part ``index`` of ``count`` equal parts of each batch,
            this process's share of the global batch when several processes train together.

    Epochs: Keras's own hooks are not a reliable epoch count (trainers peek at batches and call
    the hooks outside ``fit`` epochs), so the true epoch comes from ``set_epoch(e)``, which
    ``TrainingRun`` calls at each epoch start; with a plain ``model.fit`` pass
    ``callbacks=[batches.epoch_callback()]`` (it also handles ``initial_epoch``). Without either,
    the epoch just counts ``on_epoch_end`` calls after batches were read (still a reshuffle each
    epoch, but not tied to Keras's epoch number). Keras also shuffles the order of the batches
    inside an epoch with Python's ``random`` unless ``fit(..., shuffle=False)``; the content of
    batch ``i`` of epoch ``e`` is fixed by ``(seed, e, i)``.
    """

    def __init__(self, source, batch_size=2, shuffle=True, seed=0, transform=None, with_labels=False, workers=1,
                 indices=None, drop_remainder=False, use_multiprocessing=False, max_queue_size=4, dtype="float32",
                 shard=None):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.source = as_source(source)
        n = len(self.source)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.intp)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise DataError(f"indices out of range for {n} subjects")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if len(self.indices) == 0:
            raise DataError("no volumes to make batches from")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.transform = transform
        self.with_labels = bool(with_labels)
        self.drop_remainder = bool(drop_remainder)
        self.dtype = dtype
        self.shard = None if shard is None or int(shard[1]) <= 1 else (int(shard[0]), int(shard[1]))
        if self.shard and self.batch_size % self.shard[1]:
            raise DataError(f"a batch of {self.batch_size} cannot be split into {self.shard[1]} equal parts")
        self.epoch = 0
        self._served = False
        self._explicit = False
        if self.with_labels and self.source.label(int(self.indices[0])) is None:
            raise DataError("with_labels=True but the source has no labels")
        if self.drop_remainder and len(self.indices) < self.batch_size:
            raise DataError(f"{len(self.indices)} volumes is fewer than one batch of {self.batch_size}")

    def __len__(self):
        n = len(self.indices)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """Serve epoch ``epoch`` next (from then on only explicit calls change the epoch)."""
        self.epoch = int(epoch)
        self._explicit = True
        self._served = False

    def epoch_callback(self):
        """A Keras callback that calls ``set_epoch`` with ``fit``'s epoch number."""
        return _EpochSync(self)

    def on_epoch_end(self):
        if self._served and not self._explicit:
            self.epoch += 1
        self._served = False

    def order(self, epoch=None):
        """Subject indices of ``epoch`` in the order they are served."""
        epoch = self.epoch if epoch is None else int(epoch)
        if not self.shuffle:
            return self.indices.copy()
        rng = np.random.default_rng([self.seed, epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def batch_indices(self, index, epoch=None):
        if index < 0 or index >= len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        order = self.order(epoch)
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def __getitem__(self, index):
        epoch = self.epoch
        self._served = True
        ids = self.batch_indices(index, epoch)
        if self.shard:
            part, parts = self.shard
            ids = np.array_split(ids, parts)[part]
        # One new batch array, each image written into its place (a compact cache is widened straight into it).
        images = np.empty((len(ids), *self.source.spatial_shape, self.source.num_channels), dtype=self.dtype)
        for slot, i in zip(images, ids):
            self.source.image(int(i), out=slot)
        labels = None
        if self.with_labels:
            labels = np.stack([np.asarray(self.source.label(int(i))) for i in ids]).astype(np.int32)  # class ids
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, epoch, index, 1, *(self.shard[:1] if self.shard else ())])
            if self.with_labels:
                return self.transform(images, labels, rng)
            return self.transform(images, rng)
        if self.with_labels:
            return images, labels
        return (images,)


class _EpochSync(keras.callbacks.Callback):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
