"""Data transforms of the pretext tasks: unlabeled batches -> (inputs, targets), vectorised numpy.

Every transform takes a batch ``(N, D, H, W, C)`` (3D) or ``(N, H, W, C)`` (2D) and a
``numpy.random.Generator`` and returns what the task model trains on. They run on the host
while the accelerator trains (Keras prefetches the next batch); each is a handful of vectorised
numpy operations over the whole batch: patch extraction is one strided-view gather, rotations
and flips are grouped by class (at most 10 ``np.rot90``/``np.flip`` calls per batch, each over
all samples of that class), intensity changes are broadcast arithmetic and zoom is a separable
linear interpolation with per-sample scales (three gathers).
"""

import numpy as np

from keras_ssl3d.errors import DataError
from keras_ssl3d.tasks.patches import extract_patches, grid_geometry, patch_corners

# Rotation classes. Arrays are (N, D, H, W, C): a rotation "about D" turns the (H, W) plane.
ROTATIONS_3D = ((None, 0),
                ((2, 3), 1), ((2, 3), 2), ((2, 3), 3),   # about the D (first spatial) axis
                ((1, 3), 1), ((1, 3), 2), ((1, 3), 3),   # about the H axis
                ((1, 2), 1), ((1, 2), 2), ((1, 2), 3))   # about the W axis
ROTATIONS_2D = ((None, 0), ((1, 2), 1), ((1, 2), 2), ((1, 2), 3))


def rotations(rank):
    """The rotation classes for ``rank``: (numpy axes of the rotated plane, quarter turns)."""
    return ROTATIONS_3D if rank == 3 else ROTATIONS_2D


def _check_batch(batch, rank, name):
    batch = np.asarray(batch)
    if batch.ndim != rank + 2:
        layout = "(N, D, H, W, C)" if rank == 3 else "(N, H, W, C)"
        raise DataError(f"{name} expects a batch shaped {layout}, got shape {batch.shape}")
    return batch


def rotate_batch(batch, labels, rank):
    """Rotate sample ``i`` by rotation class ``labels[i]`` (see ``rotations``)."""
    table = rotations(rank)
    batch = _check_batch(batch, rank, "rotation")
    labels = np.asarray(labels)
    out = np.empty_like(batch)
    for label in np.unique(labels):
        axes, k = table[int(label)]
        index = labels == label
        if axes is None or k == 2:
            out[index] = batch[index] if axes is None else np.rot90(batch[index], k, axes=axes)
            continue
        if batch.shape[axes[0]] != batch.shape[axes[1]]:
            raise DataError(f"rotation by 90 degrees needs equal sizes in the rotated plane, got volume "
                            f"shape {batch.shape[1:-1]}; resize inputs to a cube (e.g. --size 128)")
        out[index] = np.rot90(batch[index], k, axes=axes)
    return out


def rotation_transform(batch, rng, rank):
    """Rotation task: each sample rotated by a random class; targets are the class indices."""
    batch = _check_batch(batch, rank, "rotation")
    labels = rng.integers(0, len(rotations(rank)), size=len(batch))
    return rotate_batch(batch, labels, rank), labels.astype(np.int32)


def jigsaw_transform(batch, rng, permutations, grid=3, jitter=3):
    """Jigsaw: ``(N, P, *patch, C)`` patches in the order of a random permutation; target its index.

    Input position ``i`` holds the tile of grid cell ``permutation[i]`` (cells row-major).
    """
    rank = batch.ndim - 2
    batch = _check_batch(batch, rank, "jigsaw")
    _, patch = grid_geometry(batch.shape[1:-1], grid, jitter)
    labels = rng.integers(0, len(permutations), size=len(batch))
    cells = np.asarray(permutations)[labels]                       # (N, P)
    corners = patch_corners(batch.shape[1:-1], grid, jitter, cells, rng)
    return extract_patches(batch, corners, patch), labels.astype(np.int32)


def rpl_neighbours(grid, rank):
    """Flat indices of the cells around the centre of a ``grid``^rank grid, in label order."""
    total = int(grid) ** rank
    centre = total // 2
    return np.array([c for c in range(total) if c != centre]), centre


def rpl_transform(batch, rng, grid=3, jitter=3):
    """Relative patch location: ``(N, 2, *patch, C)`` = (centre, neighbour); target which neighbour."""
    rank = batch.ndim - 2
    batch = _check_batch(batch, rank, "rpl")
    _, patch = grid_geometry(batch.shape[1:-1], grid, jitter)
    neighbours, centre = rpl_neighbours(grid, rank)
    labels = rng.integers(0, len(neighbours), size=len(batch))
    cells = np.stack([np.full(len(batch), centre), neighbours[labels]], axis=1)
    corners = patch_corners(batch.shape[1:-1], grid, jitter, cells, rng)
    return extract_patches(batch, corners, patch), labels.astype(np.int32)


def cpc_transform(batch, rng, grid, jitter, target_indices):
    """CPC: all grid patches ``(N, P, *patch, C)`` row-major; targets ``(N, Q)`` positives' indices."""
    rank = batch.ndim - 2
    batch = _check_batch(batch, rank, "cpc")
    _, patch = grid_geometry(batch.shape[1:-1], grid, jitter)
    starts, _ = grid_geometry(batch.shape[1:-1], grid, jitter)
    total = int(np.prod([len(s) for s in starts]))
    cells = np.broadcast_to(np.arange(total), (len(batch), total))
    corners = patch_corners(batch.shape[1:-1], grid, jitter, cells, rng)
    targets = np.broadcast_to(np.asarray(target_indices, np.int32), (len(batch), len(target_indices)))
    return extract_patches(batch, corners, patch), np.ascontiguousarray(targets)


# --- Exemplar augmentations ------------------------------------------------------------------

def random_flip(batch, rng, p=0.5):
    """Flip each sample, with probability ``p``, along one random spatial axis."""
    rank = batch.ndim - 2
    out = batch.copy()
    flip = rng.random(len(batch)) < p
    axis = rng.integers(1, rank + 1, size=len(batch))
    for a in range(1, rank + 1):
        index = flip & (axis == a)
        if index.any():
            out[index] = np.flip(batch[index], axis=a)
    return out


def random_rotation(batch, rng, p=0.5):
    """Rotate each sample, with probability ``p``, by 90/180/270 degrees about a random axis.

    Quarter turns are exact and cheap (no interpolation at 128^3); for non-cubic inputs only
    the shape-preserving 180-degree turns are drawn.
    """
    rank = batch.ndim - 2
    table = rotations(rank)
    allowed = [c for c, (axes, k) in enumerate(table)
               if axes is not None and (k == 2 or batch.shape[axes[0]] == batch.shape[axes[1]])]
    labels = np.where(rng.random(len(batch)) < p, rng.choice(allowed, size=len(batch)), 0)
    return rotate_batch(batch, labels, rank)


def random_brightness_contrast(batch, rng, p=0.5, brightness=0.1, contrast=0.25):
    """With probability ``p``: ``(x - mean) * c + mean + b``, ``c ~ U(1 +- contrast)``, ``b ~ U(+-brightness)``.

    Intensities are assumed in [0, 1] (the paper's normalisation) and clipped back to it.
    """
    n = len(batch)
    shape = (n,) + (1,) * (batch.ndim - 1)
    apply = (rng.random(n) < p).reshape(shape)
    c = rng.uniform(1 - contrast, 1 + contrast, size=n).reshape(shape).astype(batch.dtype)
    b = rng.uniform(-brightness, brightness, size=n).reshape(shape).astype(batch.dtype)
    mean = batch.mean(axis=tuple(range(1, batch.ndim - 1)), keepdims=True)
    changed = np.clip((batch - mean) * c + mean + b, 0.0, 1.0)
    return np.where(apply, changed, batch).astype(batch.dtype, copy=False)


def zoom(batch, factors):
    """Zoom each sample about its centre by ``factors[i]`` (>1 magnifies), linear interpolation.

    Voxels sampled from outside the input are 0 (background). Separable: per sample and axis,
    two ``np.take`` slab gathers and a broadcast blend (no per-voxel index arrays).
    """
    out = np.empty_like(batch)
    for n, factor in enumerate(np.asarray(factors, dtype=np.float64)):
        v = batch[n]
        for axis in range(batch.ndim - 2):
            length = v.shape[axis]
            centre = (length - 1) / 2
            coords = (np.arange(length) - centre) / factor + centre
            inside = (coords >= -1e-6) & (coords <= length - 1 + 1e-6)
            i0 = np.clip(np.floor(coords).astype(np.int64), 0, length - 1)
            i1 = np.clip(i0 + 1, 0, length - 1)
            shape = [1] * v.ndim
            shape[axis] = length
            w = (np.clip(coords - i0, 0.0, 1.0) * inside).astype(batch.dtype).reshape(shape)
            keep = inside.astype(batch.dtype).reshape(shape)
            v = np.take(v, i0, axis=axis) * (keep - w) + np.take(v, i1, axis=axis) * w
        out[n] = v
    return out


def random_zoom(batch, rng, p=0.2, scale=(0.8, 1.25)):
    """Zoom each sample, with probability ``p``, by a factor drawn log-uniformly from ``scale``."""
    apply = rng.random(len(batch)) < p
    if not apply.any():
        return batch
    out = batch.copy()
    factors = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), size=int(apply.sum())))
    out[apply] = zoom(batch[apply], factors)
    return out


def exemplar_augment(batch, rng, flip_p=0.5, rotation_p=0.5, color_p=0.5, zoom_p=0.2):
    """The paper's Exemplar augmentations: flip, rotation (0.5), brightness/contrast (0.5), zoom (0.2)."""
    x = random_flip(batch, rng, flip_p)
    x = random_rotation(x, rng, rotation_p)
    x = random_brightness_contrast(x, rng, color_p)
    return random_zoom(x, rng, zoom_p)


def exemplar_transform(batch, rng, augment=True, **augment_kwargs):
    """Pairs ``(anchor, positive)``: positive = augmented anchor; dummy targets. The negatives are
    other samples' (augmented) positives, taken inside the model (``tasks.Exemplar``), so the
    batch needs >= 2 samples. ``augment=False``: the positive is the anchor (the model augments it)."""
    rank = batch.ndim - 2
    batch = _check_batch(batch, rank, "exemplar")
    n = len(batch)
    if n < 2:
        raise DataError("exemplar needs batches of at least 2 samples (negatives are other samples)")
    positive = exemplar_augment(batch, rng, **augment_kwargs) if augment else batch
    return (batch, positive), np.zeros(n, dtype=np.float32)
