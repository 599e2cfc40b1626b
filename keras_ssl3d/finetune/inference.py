"""Sliding-window inference over whole volumes of any size.

A segmentation model is trained on fixed-size crops; whole volumes are covered by overlapping
windows whose predictions are blended with a weight map (a Gaussian centred on the window by
default, so that voxels near a window's border, which see less context, count less).

The conventions are MONAI's (`monai.inferers.sliding_window_inference`, checked numerically in
tests/test_inference_monai.py), so that results agree with PyTorch/MONAI pipelines: the window
step is ``int(window * (1 - overlap))`` (floored, at least 1), a volume smaller than the window is
zero-padded symmetrically (the extra voxel after), and the Gaussian weights are those of
`monai.data.utils.compute_importance_map`.
"""

import numpy as np

from keras_ssl3d.errors import ConfigError

BLENDS = ("gaussian", "constant")


def window_starts(size, window, overlap):
    """Start offsets covering ``[0, size)`` with windows of ``window`` and the given overlap."""
    if size <= window:
        return [0]
    # Floored as in MONAI: round() would give a longer step (less overlap than asked) for odd windows.
    step = max(1, int(window * (1 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def blend_weights(window, blend="gaussian", sigma_scale=0.125):
    """Per-voxel weights of one window: ones, or a Gaussian with sigma = window * sigma_scale.

    As `monai.data.utils.compute_importance_map` (MONAI 1.6): the product of 1-D Gaussians
    centred on the window, not rescaled (an even-sized window's peak is below 1), then raised to
    at least 1e-3 so that every voxel of a window counts a little (volume borders).
    """
    if blend not in BLENDS:
        raise ConfigError(f"unknown blend {blend!r}; choose one of {BLENDS}")
    if blend == "constant":
        return np.ones(window, dtype=np.float32)
    weights = np.ones((), dtype=np.float32)
    for n in window:
        sigma = np.float32(max(n * sigma_scale, 1e-3))
        offsets = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0)
        weights = np.multiply.outer(weights, np.exp(offsets ** 2 / (-2 * sigma ** 2)))
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def sliding_window_predict(model, volume, window, overlap=0.5, blend="gaussian", batch_size=1):
    """Class probabilities ``(D, H, W, K)`` for a volume ``(D, H, W, C)`` (or ``(N, D, H, W, K)`` for a batch).

    Volumes smaller than the window along an axis are zero-padded on both sides (half before, the
    rest after, as MONAI) and the prediction is cropped back. ``overlap`` is the fraction of a window shared with its neighbour (0 <= overlap
    < 1); ``blend`` is ``"gaussian"`` or ``"constant"`` (plain average).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 5:
        return np.stack([sliding_window_predict(model, v, window, overlap, blend, batch_size) for v in volume])
    if volume.ndim != 4:
        raise ConfigError(f"expected a volume (D, H, W, C) or a batch (N, D, H, W, C), got shape {volume.shape}")
    if isinstance(window, int):
        window = (window,) * 3
    window = tuple(int(w) for w in window)
    if len(window) != 3 or min(window) < 1:
        raise ConfigError(f"window must be three positive sizes, got {window}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

    spatial = volume.shape[:3]
    padded_shape = tuple(max(s, w) for s, w in zip(spatial, window))
    before = [(p - s) // 2 for p, s in zip(padded_shape, spatial)]
    if padded_shape != spatial:
        pad = [(b, p - s - b) for b, p, s in zip(before, padded_shape, spatial)] + [(0, 0)]
        volume = np.pad(volume, pad)

    weights = blend_weights(window, blend)[..., None]
    starts = [(z, y, x) for z in window_starts(padded_shape[0], window[0], overlap)
              for y in window_starts(padded_shape[1], window[1], overlap)
              for x in window_starts(padded_shape[2], window[2], overlap)]
    accumulated = None
    weight_sum = np.zeros((*padded_shape, 1), dtype=np.float32)
    for i in range(0, len(starts), int(batch_size)):
        chunk = starts[i:i + int(batch_size)]
        batch = np.stack([volume[z:z + window[0], y:y + window[1], x:x + window[2]] for z, y, x in chunk])
        probs = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        if accumulated is None:
            accumulated = np.zeros((*padded_shape, probs.shape[-1]), dtype=np.float32)
        for (z, y, x), p in zip(chunk, probs):
            region = (slice(z, z + window[0]), slice(y, y + window[1]), slice(x, x + window[2]))
            accumulated[region] += p * weights
            weight_sum[region] += weights
    result = accumulated / weight_sum
    return result[tuple(slice(b, b + s) for b, s in zip(before, spatial))]


def predict_labels(model, volume, window, overlap=0.5, blend="gaussian", batch_size=1):
    """Argmax label map ``(D, H, W)`` (uint8) of `sliding_window_predict`."""
    probs = sliding_window_predict(model, volume, window, overlap, blend, batch_size)
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= 0.5).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)
