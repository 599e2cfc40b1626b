"""Training-batch augmentation for few-label fine-tuning: mirroring and per-channel intensity changes.

With a handful of labelled subjects a U-Net overfits and small classes swing from epoch to epoch;
nnU-Net trains with random mirroring along every spatial axis and intensity augmentation, and
``--augment`` offers the same cheap, exact operations (no interpolation). They are a ``transform``
of the one batch pipeline (``VolumeBatches``): a pure function of the per-batch generator drawn from
``(seed, epoch, index)``, so a resumed run sees the same batches; validation batches have none.
"""

import functools

import numpy as np

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import AUGMENTATIONS  # noqa: E402
SCALE = (0.9, 1.1)
SHIFT = (-0.1, 0.1)


def augment_batch(images, labels, rng, mode="flip"):
    """``(images, labels)`` with each sample mirrored along each spatial axis with probability 1/2.

    Label maps (one value per voxel/pixel: ``labels.shape == images.shape[:-1]``) are mirrored with
    their image; per-sample labels (2D grades) are left as they are. ``"flip_intensity"`` also
    multiplies each channel of each sample by ``U(0.9, 1.1)`` and adds ``U(-0.1, 0.1)`` (image only).
    """
    if mode not in AUGMENTATIONS:
        raise ConfigError(f"--augment must be one of {AUGMENTATIONS}, got {mode!r}")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if mode == "none":
        return images, labels
    n, rank = len(images), images.ndim - 2
    maps = labels.shape == images.shape[:-1]
    flips = rng.random((n, rank)) < 0.5
    images, labels = images.copy(), labels.copy()
    for axis in range(rank):  # one np.flip per axis, over all the samples it mirrors
        index = flips[:, axis]
        if index.any():
            images[index] = np.flip(images[index], axis=axis + 1)
            if maps:
                labels[index] = np.flip(labels[index], axis=axis + 1)
    if mode == "flip_intensity":
        shape = (n,) + (1,) * rank + (images.shape[-1],)
        scale = rng.uniform(*SCALE, size=shape).astype(images.dtype)
        shift = rng.uniform(*SHIFT, size=shape).astype(images.dtype)
        images = images * scale + shift
    return images, labels


def augmentation(mode):
    """The ``VolumeBatches`` transform ``(images, labels, rng) -> (x, y)`` for ``mode``; None for ``"none"``."""
    if mode not in AUGMENTATIONS:
        raise ConfigError(f"--augment must be one of {AUGMENTATIONS}, got {mode!r}")
    return None if mode == "none" else functools.partial(augment_batch, mode=mode)
