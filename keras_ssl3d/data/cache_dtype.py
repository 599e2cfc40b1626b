"""How the cache stores intensities, and reading them back as float32 fast (a batch slot at a time)."""

import numpy as np

# How the cache stores intensities (all scale modes give [0, 1]): float16 halves the disk and the page cache at
# a rounding error <= 2.4e-4, uint8 quarters them at <= 2.0e-3 (1/510). float32 stays the default: even read back
# with ``half_to_float32`` (2x faster than numpy's cast) a float16 volume costs more CPU than a float32 copy here,
# so the pipeline is ~15 % slower from the page cache; only from disk are they equal (BENCHMARKS.md, "Compact cache").
CACHE_DTYPES = ("float32", "float16", "uint8")
DEFAULT_CACHE_DTYPE = "float32"

def to_cache_dtype(image, dtype):
    """``image`` in [0, 1] as the cache stores it (`from_cache_dtype` reads it back as float32)."""
    if dtype == "uint8":
        return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.asarray(image, dtype=dtype)


def from_cache_dtype(stored, out=None):
    """A cached image as float32 in [0, 1], whatever the cache stores (a float32 memory map stays one).

    With ``out`` (e.g. a slot of a batch) the image is written into it and ``out`` returned: no second copy.
    """
    if out is not None and out.dtype != np.float32:
        np.copyto(out, from_cache_dtype(stored))
        return out
    if out is None:
        if stored.dtype == np.float32:
            return stored
        out = np.empty(stored.shape, dtype=np.float32)
    if stored.dtype == np.uint8:
        np.multiply(stored, np.float32(1.0 / 255.0), out=out, dtype=np.float32)
    elif stored.dtype == np.float16:
        half_to_float32(stored, out)
    else:
        np.copyto(out, stored)
    return out


# half_to_float32: voxels per step (the widened chunk, 512 KB, stays in the CPU cache for the next passes);
# bit patterns from 0x7C00 up are infinities, NaNs and negative numbers (numpy's cast converts those).
_HALF_CHUNK = 1 << 17
_HALF_FIRST_NOT_FINITE_POSITIVE = 0x7C00
_HALF_TO_SINGLE = np.float32(2.0 ** 112)  # 2^(127 - 15): the difference of the exponent biases
_SMALLEST_SUBNORMAL = np.array([1], dtype=np.uint32).view(np.float32)


def half_to_float32(half, out):
    """``out[...] = half`` (float16 to float32, bit for bit what numpy's cast gives), about 2x faster.

    numpy casts float16 element by element here (~20-26 ms per 128^3 x 4 volume, twice reading it); this
    widens the bits instead: a non-negative finite half's bits shifted left by 13 are a float32 whose
    exponent is 112 too small, and multiplying by 2^112 fixes it exactly, also for zero and subnormals.
    """
    source = half.reshape(-1).view(np.uint16) if half.flags.c_contiguous else None
    if source is None or not out.flags.c_contiguous or half.shape != out.shape or not _subnormals_kept():
        np.copyto(out, half)
        return out
    single = out.reshape(-1)
    bits = single.view(np.uint32)
    for start in range(0, source.size, _HALF_CHUNK):
        part = slice(start, start + _HALF_CHUNK)
        wide = bits[part]
        np.copyto(wide, source[part], casting="unsafe")
        if wide.max() >= _HALF_FIRST_NOT_FINITE_POSITIVE:
            np.copyto(single[part], half.reshape(-1)[part])
            continue
        np.left_shift(wide, 13, out=wide)
        np.multiply(single[part], _HALF_TO_SINGLE, out=single[part])
    return out


def _subnormals_kept():
    """False where this thread treats subnormal floats as zero (a library built with -ffast-math can set it)."""
    return bool((_SMALLEST_SUBNORMAL * _HALF_TO_SINGLE)[0] != 0)
