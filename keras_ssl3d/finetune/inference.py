"""Sliding-window inference over whole volumes of any size.

A segmentation model is trained on fixed-size crops; whole volumes are covered by overlapping
windows whose predictions are blended with a weight map (a Gaussian centred on the window by
default, so that voxels near a window's border, which see less context, count less).
"""

import numpy as np

from keras_ssl3d.errors import ConfigError

BLENDS = ("gaussian", "constant")


def window_starts(size, window, overlap):
    """Start offsets covering ``[0, size)`` with windows of ``window`` and the given overlap."""
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def blend_weights(window, blend="gaussian", sigma_scale=0.125):
    """Per-voxel weights of one window: ones, or a Gaussian with sigma = window * sigma_scale."""
    if blend not in BLENDS:
        raise ConfigError(f"unknown blend {blend!r}; choose one of {BLENDS}")
    if blend == "constant":
        return np.ones(window, dtype=np.float32)
    weights = np.ones((), dtype=np.float64)
    for n in window:
        centre = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-3)
        axis = np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights = weights / weights.max()
    # Never exactly zero: every voxel of a window must count a little (volume borders).
    return np.maximum(weights, 1e-3).astype(np.float32)


def sliding_window_predict(model, volume, window, overlap=0.5, blend="gaussian", batch_size=1):
    """Class probabilities ``(D, H, W, K)`` for a volume ``(D, H, W, C)`` (or ``(N, D, H, W, K)`` for a batch).

    Volumes smaller than the window along an axis are zero-padded at the end and the prediction
    is cropped back. ``overlap`` is the fraction of a window shared with its neighbour (0 <= overlap
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
    if padded_shape != spatial:
        pad = [(0, p - s) for p, s in zip(padded_shape, spatial)] + [(0, 0)]
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
    return result[: spatial[0], : spatial[1], : spatial[2]]


def predict_labels(model, volume, window, overlap=0.5, blend="gaussian", batch_size=1):
    """Argmax label map ``(D, H, W)`` (uint8) of `sliding_window_predict`."""
    probs = sliding_window_predict(model, volume, window, overlap, blend, batch_size)
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= 0.5).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)
