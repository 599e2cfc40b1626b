"""Masked image modelling for 3D CNNs (MAE, He et al. 2022; for 3D CNNs as in Wald et al.,
"Revisiting MAE pre-training for 3D medical image segmentation", CVPR 2025).

The volume is cut into non-overlapping cubic patches (16^3 by default); a random 75 % of them
(exactly ``int(0.75 * patches)`` per volume, as in the authors' nnssl code) are set to 0, the
mask token of a dense CNN. A full U-Net (encoder + ``UNetDecoder3D`` + a linear 1x1x1 output)
reconstructs the volume, and the loss is the MSE on the masked voxels only (``MaskedMSE``).
Masking happens in the transform, so the encoder sees masked inputs while pretraining only; the
saved preset is the whole U-Net (decoder included), whose encoder sees whole volumes afterwards.

Wald et al. train a ResEnc-L U-Net on 160^3 crops of 39k brain MRIs; the encoder here is the
package's (Taleb et al.) 3D U-Net encoder, and a volume side that is not a multiple of the patch
size gets a smaller last patch.
"""

import math

import keras
import numpy as np

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.losses.reconstruction import MaskedMSE
from keras_ssl3d.tasks.base import RestorationTask


def patch_mask(n, spatial, rng, mask_ratio=0.75, patch_size=16):
    """``(n, *spatial)`` float masks (1 = masked): ``int(mask_ratio * P)`` of the ``P`` patches of each sample."""
    patch = (int(patch_size),) * len(spatial) if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)
    grid = [math.ceil(s / p) for s, p in zip(spatial, patch)]
    total = int(np.prod(grid))
    count = int(mask_ratio * total)
    if not 0 < count < total:
        raise ConfigError(f"MAE: masking {mask_ratio:g} of {total} patches of {'x'.join(map(str, patch))} in a "
                          f"{'x'.join(map(str, spatial))} volume masks {count}; use a smaller patch_size or "
                          "a larger input")
    chosen = np.argsort(rng.random((n, total)), axis=1)[:, :count]
    flat = np.zeros((n, total), np.float32)
    np.put_along_axis(flat, chosen, 1.0, axis=1)
    mask = flat.reshape(n, *grid)
    for axis, p in enumerate(patch, start=1):
        mask = np.repeat(mask, p, axis=axis)
    return mask[(slice(None), *(slice(0, s) for s in spatial))]


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class MAE(RestorationTask):
    """Masked volume -> U-Net (encoder + decoder + linear output) -> reconstruction; loss on masked voxels.

    The transform returns the masked volume as input and ``original | mask`` (one more channel)
    as target, which ``MaskedMSE`` splits again.

    Args:
        encoder: an ``Encoder3D``; inputs must be multiples of ``encoder.size_divisor``.
        mask_ratio: fraction of patches masked (0.75, Wald et al. 2025).
        patch_size: side of the masked cubes in voxels (16, Wald et al. 2025), or one per axis.
    """

    small_hparams = {"patch_size": 4}

    def __init__(self, encoder, mask_ratio=0.75, patch_size=16, name="mae", **kwargs):
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"MAE: mask_ratio must lie in (0, 1), got {mask_ratio}")
        super().__init__(encoder, None, "masked", name, **kwargs)
        self.mask_ratio = float(mask_ratio)
        self.patch_size = int(patch_size) if np.isscalar(patch_size) else [int(p) for p in patch_size]

    def default_loss(self):
        return MaskedMSE()

    def transform(self, batch, rng):
        batch = self.volumes(batch)
        mask = patch_mask(len(batch), batch.shape[1:-1], rng, self.mask_ratio, self.patch_size)[..., None]
        return batch * (1.0 - mask), np.concatenate([batch, mask], axis=-1)

    def get_config(self):
        config = self._base_config()
        config.update(mask_ratio=self.mask_ratio, patch_size=self.patch_size)
        return config
