"""Patch grids with random jitter, for the patch-based tasks (CPC, RPL, jigsaw), 3D and 2D.

Geometry (per spatial axis of length ``S``, grid ``g``, jitter ``j``): the axis is cut into
``g`` cells of ``c = S // g`` voxels (centred: ``(S - g*c) // 2`` voxels are left out at the
start), and each patch is a ``p = c - j`` sub-cube placed at a random offset in ``0..j`` inside
its cell ("a random jitter of 3 voxels per axis", as in the paper). Patches of neighbouring
cells therefore never touch exactly, so the network cannot solve the task by continuing edges.

Examples: 128^3 with a 3x3x3 grid and jitter 3 -> cells of 42, patches of 39^3;
224^2 with 3x3 and jitter 3 -> 71^2; 128^3 with CPC's 4x4x4 grid and jitter 3 -> 29^3.

Extraction is vectorised numpy: a strided sliding-window *view* of the batch indexed with
all patch corners at once (one gather; no Python loop over patches).
"""

import numpy as np


def grid_geometry(spatial_shape, grid, jitter):
    """Cell starts and patch size of a jittered patch grid.

    Returns ``(starts, patch_shape)``: ``starts[a]`` is the array of the ``grid[a]`` cell starts
    along axis ``a``; ``patch_shape`` is the patch size along each axis.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    grid = _per_axis(grid, len(spatial_shape), "grid")
    jitter = int(jitter)
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    starts, patch = [], []
    for size, g in zip(spatial_shape, grid):
        cell = size // g
        if cell - jitter < 1:
            raise ValueError(f"a {g}-cell grid with jitter {jitter} does not fit an axis of {size} voxels")
        margin = (size - g * cell) // 2
        starts.append(margin + cell * np.arange(g))
        patch.append(cell - jitter)
    return starts, tuple(patch)


def patch_shape_for(spatial_shape, grid, jitter):
    """The patch size a grid gives for inputs of ``spatial_shape`` (documentation helper)."""
    return grid_geometry(spatial_shape, grid, jitter)[1]


def patch_corners(spatial_shape, grid, jitter, cells, rng):
    """Corners of jittered patches: ``cells`` ``(N, P)`` flat cell indices -> ``(N, P, rank)``.

    Each patch gets its own random offset in ``0..jitter`` per axis.
    """
    starts, _ = grid_geometry(spatial_shape, grid, jitter)
    grid = tuple(len(s) for s in starts)
    cells = np.asarray(cells)
    coords = np.stack(np.unravel_index(cells, grid), axis=-1)  # (N, P, rank)
    corners = np.stack([starts[a][coords[..., a]] for a in range(len(grid))], axis=-1)
    if jitter:
        corners = corners + rng.integers(0, jitter + 1, size=corners.shape)
    return corners


def extract_patches(batch, corners, patch_shape):
    """Gather patches ``(N, P, *patch_shape, C)`` from ``batch`` ``(N, *spatial, C)`` at ``corners`` ``(N, P, rank)``."""
    batch = np.asarray(batch)
    rank = batch.ndim - 2
    corners = np.asarray(corners)
    if corners.shape[-1] != rank or len(patch_shape) != rank:
        raise ValueError(f"corners {corners.shape} / patch {patch_shape} do not match a rank-{rank} batch")
    windows = np.lib.stride_tricks.sliding_window_view(batch, patch_shape, axis=tuple(range(1, rank + 1)))
    n_index = np.arange(len(batch))[:, None]
    patches = windows[(n_index, *[corners[..., a] for a in range(rank)])]  # (N, P, C, *patch)
    return np.ascontiguousarray(np.moveaxis(patches, 2, -1))


def _per_axis(value, rank, name):
    if np.isscalar(value):
        return (int(value),) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{name} needs {rank} values, got {value}")
    return value
