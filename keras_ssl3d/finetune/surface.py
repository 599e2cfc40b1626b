"""Surface distances between two masks in millimetres: HD95 and the mean surface distance (BraTS).

Definitions (those of `monai.metrics.HausdorffDistanceMetric(percentile=95)` and
`SurfaceDistanceMetric(symmetric=True)`, checked in tests/test_metrics_surface.py): a mask's surface
is its voxels with a 6-connected neighbour outside it (the mask minus its binary erosion; the
volume's border counts as outside). For every surface voxel of one mask, the Euclidean distance in mm
(voxel spacing per axis) to the nearest surface voxel of the other mask:

- HD95: the larger of the two directed 95th percentiles (prediction -> truth, truth -> prediction),
  with linear interpolation between ranks;
- mean surface distance (MSD, also "ASSD"): the mean of the distances of both directions together.

Empty masks follow the BraTS convention, not MONAI's: both empty -> 0 mm (nothing to find, nothing
found); only one empty -> the volume's diagonal in mm, the largest distance possible inside it (for a
BraTS scan, 240 x 240 x 155 voxels of 1 mm, that is 373.13 mm, the penalty of the BraTS 2021
evaluation). MONAI returns nan (both empty) or inf (one empty) instead, which cannot be averaged.
"""

import numpy as np

from keras_ssl3d.errors import ConfigError

PERCENTILE = 95.0


def max_distance(shape, spacing):
    """The diagonal of a volume of ``shape`` voxels of ``spacing`` mm: the penalty for a missed structure."""
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)) ** 2)))


def _check(pred_mask, true_mask, spacing):
    pred_mask = np.asarray(pred_mask, dtype=bool)
    true_mask = np.asarray(true_mask, dtype=bool)
    if pred_mask.shape != true_mask.shape:
        raise ConfigError(f"prediction shape {pred_mask.shape} != ground truth shape {true_mask.shape}")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred_mask.ndim,))
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise ConfigError(f"voxel spacing must be positive numbers, got {spacing.tolist()}")
    return pred_mask, true_mask, spacing


def surface_distances(pred_mask, true_mask, spacing):
    """``(prediction -> truth, truth -> prediction)`` distances in mm of every surface voxel; both masks
    must hold a voxel."""
    from scipy import ndimage

    pred_mask, true_mask, spacing = _check(pred_mask, true_mask, spacing)
    if not (pred_mask.any() and true_mask.any()):
        raise ConfigError("surface distances need two non-empty masks")
    # Work inside the bounding box of both masks: every surface voxel lies in it, and outside it is
    # background, as the erosion's border (border_value=0) assumes; distances are unchanged.
    both = np.argwhere(pred_mask | true_mask)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(both.min(axis=0), both.max(axis=0)))
    pred_mask, true_mask = pred_mask[box], true_mask[box]
    pred_surface = pred_mask & ~ndimage.binary_erosion(pred_mask)
    true_surface = true_mask & ~ndimage.binary_erosion(true_mask)
    to_true = ndimage.distance_transform_edt(~true_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_true[pred_surface], to_pred[true_surface]


def surface_scores(pred_mask, true_mask, spacing, percentile=PERCENTILE):
    """``{"hd95": mm, "msd": mm}`` of two masks (the empty-mask convention of the module docstring)."""
    pred_mask, true_mask, spacing = _check(pred_mask, true_mask, spacing)
    has_pred, has_true = bool(pred_mask.any()), bool(true_mask.any())
    if not has_pred and not has_true:
        return {"hd95": 0.0, "msd": 0.0}
    if not (has_pred and has_true):
        penalty = max_distance(pred_mask.shape, spacing)
        return {"hd95": penalty, "msd": penalty}
    to_true, to_pred = surface_distances(pred_mask, true_mask, spacing)
    hd = max(float(np.percentile(to_true, percentile)), float(np.percentile(to_pred, percentile)))
    return {"hd95": hd, "msd": float(np.concatenate([to_true, to_pred]).mean())}


def hd95(pred_mask, true_mask, spacing):
    """95th-percentile Hausdorff distance in mm (BraTS empty-mask convention)."""
    return surface_scores(pred_mask, true_mask, spacing)["hd95"]


def mean_surface_distance(pred_mask, true_mask, spacing):
    """Mean symmetric surface distance in mm (BraTS empty-mask convention)."""
    return surface_scores(pred_mask, true_mask, spacing)["msd"]
