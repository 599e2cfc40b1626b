"""How the cache stores intensities, and reading them back as float32 fast (a batch slot at a time)."""

import numpy as np

from keras_ssl3d.host import machine_memory

# How the cache stores intensities (all scale modes give [0, 1]): float16 and uint16 halve the disk and the page
# cache, uint8 quarters them. uint16 is 16-bit fixed point (k / 65535): rounding <= 7.6e-6, 32x finer than
# float16's <= 2.4e-4 on [0, 1], and read back in one multiply; uint8 rounds to <= 2.0e-3 (1/510). Measured
# (BENCHMARKS.md, "Compact cache"): from the page cache float32 is read fastest (uint16 0.86-1.01x, float16
# 0.67-0.94x), from disk the halved bytes win (uint16 1.24-1.46x, float16 1.15-1.24x). Hence the default for a new
# cache (`auto_cache_dtype`): float32 while it fits in memory, uint16 beyond.
CACHE_DTYPES = ("float32", "float16", "uint16", "uint8")
# the share of the machine's memory a float32 cache may fill and still be read from the page cache
PAGE_CACHE_SHARE = 0.5


def auto_cache_dtype(n_subjects, spatial_shape, channels, memory_bytes=None):
    """``(dtype, reason)`` for a new cache: float32 while its images fit in `PAGE_CACHE_SHARE` of the machine's
    memory (then they are read from the page cache, where float32 is fastest), uint16 beyond (then they are read
    from disk, where half the bytes read faster)."""
    full = int(n_subjects) * int(np.prod(spatial_shape)) * int(channels) * 4
    memory = machine_memory() if memory_bytes is None else int(memory_bytes)
    if not memory:
        return "float32", f"{_gb(full)} as float32; this machine's memory is not known"
    fits = full <= PAGE_CACHE_SHARE * memory
    where = f"{_gb(full)} as float32, {'within' if fits else 'more than'} half of this machine's {_gb(memory)} memory"
    return ("float32", f"{where}: read from memory, where float32 is fastest") if fits else (
        "uint16", f"{where}: read from disk, where half the bytes read faster")


def _gb(n):
    return f"{n / 1e9:.1f} GB"


def to_cache_dtype(image, dtype):
    """``image`` in [0, 1] as the cache stores it (`from_cache_dtype` reads it back as float32)."""
    if dtype in ("uint8", "uint16"):  # fixed point: k / 255 or k / 65535
        levels = np.iinfo(dtype).max
        return np.round(np.clip(image, 0.0, 1.0) * float(levels)).astype(dtype)
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
    if stored.dtype in (np.uint8, np.uint16):
        np.multiply(stored, np.float32(1.0 / np.iinfo(stored.dtype).max), out=out, dtype=np.float32)
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
        if source[part].max() >= _HALF_FIRST_NOT_FINITE_POSITIVE:
            np.copyto(single[part], half.reshape(-1)[part])
            continue
        # One ufunc widens and shifts (numpy casts the uint16 chunk in its own buffer): two passes, not three.
        np.left_shift(source[part], 13, out=bits[part], dtype=np.uint32)
        np.multiply(single[part], _HALF_TO_SINGLE, out=single[part])
    return out


def _subnormals_kept():
    """False where this thread treats subnormal floats as zero (a library built with -ffast-math can set it)."""
    return bool((_SMALLEST_SUBNORMAL * _HALF_TO_SINGLE)[0] != 0)
