"""Models Genesis: restore volumes from distorted copies (Zhou et al., MICCAI 2019; MedIA 2021).

Each training volume is distorted by up to four transforms, each drawn with its own
probability (the defaults are those of the authors' code):

1. local voxel shuffling (0.5): the voxels inside small blocks are shuffled;
2. a non-linear intensity mapping (0.9): a random cubic Bezier curve through (0, 0) and
   (1, 1), or, with probability 0.5, its inversion ``1 - f``;
3. painting (0.9): in-painting (20 % of paintings: up to 5 boxes replaced by uniform noise) or
   out-painting (80 %: everything outside up to 5 boxes replaced by uniform noise).

A full U-Net (the encoder + ``UNetDecoder3D`` + a 1x1x1 sigmoid output, i.e. a ``Segmenter3D``
with one output channel per input channel) restores the original; the loss is the MSE. The
decoder is pretrained too: pretraining saves the whole U-Net as the preset
(``pretrained_model()``), and fine-tuning from it starts the decoder from it.

Deviation: the authors shuffle 10,000 random, possibly overlapping blocks per volume in a
Python loop; here the volume is tiled into non-overlapping blocks of a random size (1 to
``size // 10`` voxels per axis, at least 2) and every block is shuffled (vectorised, and each
block keeps exactly its own voxels). Intensities are assumed in [0, 1] (the package's
normalisation).
"""

import math

import keras
import numpy as np

from keras_ssl3d.tasks.base import RestorationTask


def bezier_mapping(control_points, num=1001):
    """The cubic Bezier curve through (0, 0), ``control_points`` (two (x, y) in [0, 1]^2) and (1, 1),
    sampled as a lookup table ``(xs, ys)``. Both coordinates grow with the curve parameter, so the
    mapping ``np.interp(v, xs, ys)`` is monotone and fixes 0 and 1."""
    t = np.linspace(0.0, 1.0, num)
    points = np.array([(0.0, 0.0), *control_points, (1.0, 1.0)])
    weights = np.stack([math.comb(3, i) * t ** i * (1 - t) ** (3 - i) for i in range(4)], axis=1)  # Bernstein
    xs, ys = (weights @ points).T
    return np.maximum.accumulate(xs), ys


def nonlinear_intensity(volume, rng, invert_p=0.5):
    """Map intensities through a random Bezier curve (inverted, ``1 - f``, with probability ``invert_p``)."""
    xs, ys = bezier_mapping(rng.random((2, 2)))
    if rng.random() < invert_p:
        ys = 1.0 - ys
    return np.interp(volume, xs, ys).astype(volume.dtype)


def local_shuffle(volume, rng, sides=None, starts=None):
    """Shuffle the voxels (all channels together) within each block of a non-overlapping tiling.

    Block ``sides`` are drawn per axis from ``1..max(2, size // 10)`` and the tiling ``starts`` at a
    random offset unless given; voxels outside whole blocks stay in place.
    """
    spatial = volume.shape[:-1]
    if sides is None:
        sides = [int(rng.integers(1, max(2, s // 10) + 1)) for s in spatial]
    if min(s // b for s, b in zip(spatial, sides)) < 1:
        return volume
    if starts is None:
        starts = [int(rng.integers(0, s % b + 1)) for s, b in zip(spatial, sides)]
    counts = [(s - a) // b for s, a, b in zip(spatial, starts, sides)]
    region = tuple(slice(a, a + c * b) for a, c, b in zip(starts, counts, sides))
    rank = len(spatial)
    # (c0, b0, c1, b1, ..., C) -> (blocks, voxels per block, C)
    tiles = volume[region].reshape([*(n for cb in zip(counts, sides) for n in cb), volume.shape[-1]])
    order = [2 * i for i in range(rank)] + [2 * i + 1 for i in range(rank)] + [2 * rank]
    blocks = tiles.transpose(order).reshape(int(np.prod(counts)), int(np.prod(sides)), volume.shape[-1])
    perm = np.argsort(rng.random(blocks.shape[:2]), axis=1)
    blocks = np.take_along_axis(blocks, perm[..., None], axis=1)
    back = np.argsort(order)
    tiles = blocks.reshape([*counts, *sides, volume.shape[-1]]).transpose(back)
    out = volume.copy()
    out[region] = tiles.reshape(out[region].shape)
    return out


def _random_box(rng, spatial, low, high):
    """A box with sides in ``[low * s, high * s]`` and a margin of up to 3 voxels from the borders."""
    box = []
    for s in spatial:
        side = int(rng.integers(max(1, int(low * s)), max(1, int(high * s)) + 1))
        margin = min(3, (s - side) // 2)
        start = int(rng.integers(margin, s - side - margin + 1))
        box.append(slice(start, start + side))
    return tuple(box)


def in_paint(volume, rng, max_boxes=5):
    """Replace 1..``max_boxes`` boxes (sides 1/6 to 1/3 of the volume) by uniform noise."""
    out = volume.copy()
    for count in range(max_boxes):
        if count and rng.random() >= 0.95:
            break
        box = _random_box(rng, volume.shape[:-1], 1 / 6, 1 / 3)
        out[box] = rng.random(out[box].shape, dtype=np.float32)
    return out


def out_paint(volume, rng, max_boxes=5):
    """Replace everything outside 1..``max_boxes`` boxes (sides 3/7 to 4/7 of the volume) by uniform noise."""
    out = rng.random(volume.shape, dtype=np.float32).astype(volume.dtype)
    for count in range(max_boxes):
        if count and rng.random() >= 0.95:
            break
        box = _random_box(rng, volume.shape[:-1], 3 / 7, 4 / 7)
        out[box] = volume[box]
    return out


def genesis_distort(volume, rng, local_shuffle_p=0.5, nonlinear_p=0.9, paint_p=0.9, outpaint_p=0.8):
    """One volume ``(*spatial, C)`` through the four distortions, each with its probability (in this order)."""
    x = volume
    if rng.random() < local_shuffle_p:
        x = local_shuffle(x, rng)
    if rng.random() < nonlinear_p:
        x = nonlinear_intensity(x, rng)
    if rng.random() < paint_p:
        x = out_paint(x, rng) if rng.random() < outpaint_p else in_paint(x, rng)
    return x


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Genesis(RestorationTask):
    """Distorted volume -> U-Net (encoder + decoder + sigmoid) -> restored volume; MSE loss.

    Args:
        encoder: an ``Encoder3D``; inputs must be multiples of ``encoder.size_divisor``.
        local_shuffle_p, nonlinear_p, paint_p: probabilities of the distortions (0.5, 0.9, 0.9).
        outpaint_p: share of paintings that are out-paintings (0.8; the rest in-paint).
    """

    def __init__(self, encoder, local_shuffle_p=0.5, nonlinear_p=0.9, paint_p=0.9, outpaint_p=0.8,
                 name="genesis", **kwargs):
        super().__init__(encoder, "sigmoid", "distorted", name, **kwargs)
        self.distortion = {"local_shuffle_p": float(local_shuffle_p), "nonlinear_p": float(nonlinear_p),
                           "paint_p": float(paint_p), "outpaint_p": float(outpaint_p)}

    def default_loss(self):
        return keras.losses.MeanSquaredError()

    def transform(self, batch, rng):
        batch = self.volumes(batch)
        distorted = np.stack([genesis_distort(v, rng, **self.distortion) for v in batch])
        return distorted.astype(np.float32), batch

    def get_config(self):
        config = self._base_config()
        config.update(self.distortion)
        return config
