"""The preprocessing steps on one volume, in plain numpy: foreground crop, resize (trilinear for images,
nearest for labels), intensity scaling, label remapping. ``keras_ssl3d.data.preprocess`` applies them
per subject and writes the cache."""

import numpy as np

from keras_ssl3d.errors import DataError

SCALE_MODES = ("minmax", "percentile", "ct_window")
DEFAULT_PERCENTILES = (0.5, 99.5)
# Abdominal soft-tissue window (level 40 HU, width 400 HU), the usual choice for the pancreas.
DEFAULT_CT_WINDOW = (-160.0, 240.0)


def _as_shape3(size):
    if np.isscalar(size):
        return (int(size),) * 3
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise ValueError(f"size must be an int or 3 ints, got {size}")
    return size


def foreground_bbox(image, threshold=None):
    """Bounding box ``[(start, stop)] * 3`` of voxels above ``threshold`` in any channel.

    With ``threshold=None`` a voxel is foreground when it exceeds its channel's minimum (the
    background of skull-stripped MR is the minimum, 0). An empty mask gives the full extent.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    if threshold is None:
        thr = image.reshape(-1, image.shape[-1]).min(axis=0)
    else:
        thr = np.broadcast_to(np.asarray(threshold, dtype=image.dtype), (image.shape[-1],))
    mask = np.any(image > thr, axis=-1)
    if not mask.any():
        return [(0, int(n)) for n in mask.shape]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def crop_to_foreground(image, label=None, threshold=None, margin=0):
    """Crop ``image`` (and ``label``) to the foreground bounding box grown by ``margin`` voxels.

    Returns ``(image, label, bbox)``; ``bbox`` lists ``(start, stop)`` per spatial axis so a
    prediction can be pasted back.
    """
    box = foreground_bbox(image, threshold)
    shape = np.shape(image)[:3]
    box = [(max(0, a - margin), min(n, b + margin)) for (a, b), n in zip(box, shape)]
    sl = tuple(slice(a, b) for a, b in box)
    image = np.asarray(image)[sl]
    if label is not None:
        label = np.asarray(label)[sl]
    return image, label, box


def _linear_axis(a, out_len, axis):
    in_len = a.shape[axis]
    if in_len == out_len:
        return a
    # Half-pixel centres (align_corners=False), as torch / tf.image.resize.
    x = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    x = np.clip(x, 0, in_len - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, in_len - 1)
    w = (x - i0).astype(np.float32)
    bshape = [1] * a.ndim
    bshape[axis] = out_len
    w = w.reshape(bshape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i1, axis=axis)
    lo *= 1.0 - w
    hi *= w
    lo += hi
    return lo


def resize_volume(image, shape):
    """Trilinear resize of ``(D, H, W)`` or ``(D, H, W, C)`` to ``shape`` (half-pixel centres).

    Separable: one 1-D linear interpolation per axis, the most shrinking axis first.
    """
    shape = _as_shape3(shape)
    a = np.asarray(image, dtype=np.float32)
    ratios = [shape[i] / a.shape[i] for i in range(3)]
    for axis in sorted(range(3), key=lambda i: ratios[i]):
        a = _linear_axis(a, shape[axis], axis)
    return np.ascontiguousarray(a, dtype=np.float32)


def _nearest_index(in_len, out_len):
    idx = np.floor((np.arange(out_len) + 0.5) * (in_len / out_len)).astype(np.intp)
    return np.clip(idx, 0, in_len - 1)


def resize_labels(labels, shape):
    """Nearest-neighbour resize of an integer ``(D, H, W)`` map (values are never mixed)."""
    shape = _as_shape3(shape)
    labels = np.asarray(labels)
    idx = [_nearest_index(labels.shape[i], shape[i]) for i in range(3)]
    return np.ascontiguousarray(labels[np.ix_(*idx)])


def scale_intensity(image, mode="minmax", percentiles=DEFAULT_PERCENTILES, window=DEFAULT_CT_WINDOW):
    """Scale each channel of ``(..., C)`` to [0, 1].

    - ``"minmax"``: ``(x - min) / (max - min)`` (the paper);
    - ``"percentile"``: clip to the ``percentiles`` of the channel's foreground (voxels above its
      minimum) first, robust to a few very bright voxels;
    - ``"ct_window"``: clip to a fixed Hounsfield ``window`` (e.g. -160..240), comparable across scans.
    A constant channel becomes all zeros.
    """
    if mode not in SCALE_MODES:
        raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    for c in range(image.shape[-1]):
        x = image[..., c]
        if mode == "minmax":
            lo, hi = float(x.min()), float(x.max())
        elif mode == "percentile":
            fg = x[x > x.min()]
            ref = fg if fg.size else x.ravel()
            lo, hi = (float(v) for v in np.percentile(ref, percentiles))
        else:
            lo, hi = float(window[0]), float(window[1])
        if hi <= lo:
            out[..., c] = 0.0
            continue
        np.clip(x, lo, hi, out=out[..., c])
        out[..., c] -= lo
        out[..., c] /= np.float32(hi - lo)
    return out


def label_mapping_for(label_names):
    """Raw label value -> training class ``0..K-1`` (sorted), e.g. BraTS ``{0,1,2,4}`` -> 4 -> 3."""
    if not label_names:
        return None
    return {int(v): i for i, v in enumerate(sorted(int(k) for k in label_names))}


def remap_labels(labels, mapping, path=None):
    """Map raw label values through ``mapping`` (dict raw -> class); unknown values are an error."""
    labels = np.asarray(labels)
    if mapping is None:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise DataError(f"unexpected label values (range {labels.min()}..{labels.max()})", path=path)
        return labels.astype(np.uint8)
    lut = np.full(256, 255, dtype=np.int32)
    for raw, new in mapping.items():
        lut[int(raw)] = int(new)
    values = np.unique(labels)
    bad = [int(v) for v in values if v < 0 or v > 255 or lut[int(v)] == 255]
    if bad:
        expected = ", ".join(str(k) for k in sorted(mapping))
        hint = ""
        if set(mapping) == {0, 1, 2, 4} and 3 in bad:
            hint = "; BraTS 2023 labels (enhancing 3)? preprocess with --label-convention brats2023"
        raise DataError(f"unexpected label values {bad} (expected {expected}){hint}", path=path)
    return lut[labels.astype(np.intp)].astype(np.uint8)
