"""Pretext data transforms: rotation classes, patch grids and jitter, exemplar augmentations."""

import numpy as np
import pytest

from keras_ssl3d.errors import DataError
from keras_ssl3d.tasks.patches import extract_patches, grid_geometry, patch_corners
from keras_ssl3d.tasks import transforms as T


def _volumes(n=3, shape=(6, 6, 6), channels=2, seed=0):
    return np.random.default_rng(seed).random((n, *shape, channels), dtype=np.float32)


def test_rotation_3d_has_exactly_10_distinct_reachable_classes():
    assert len(T.ROTATIONS_3D) == 10 and len(T.ROTATIONS_2D) == 4
    x = _volumes(1, channels=1)
    rotated = [T.rotate_batch(x, [c], 3)[0] for c in range(10)]
    for i in range(10):
        for j in range(i + 1, 10):
            assert not np.allclose(rotated[i], rotated[j]), (i, j)
    rng = np.random.default_rng(0)
    _, labels = T.rotation_transform(_volumes(400, (4, 4, 4), 1), rng, 3)
    assert set(labels.tolist()) == set(range(10))  # every class is drawn, none beyond
    _, labels2d = T.rotation_transform(np.zeros((100, 4, 4, 1), np.float32), rng, 2)
    assert set(labels2d.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("label,k,axes", [(0, 0, (1, 2)), (1, 1, (1, 2)), (2, 2, (1, 2)), (3, 3, (1, 2)),
                                          (4, 1, (0, 2)), (6, 3, (0, 2)), (7, 1, (0, 1)), (9, 3, (0, 1))])
def test_rotation_equals_rot90(label, k, axes):
    x = _volumes(2)
    out = T.rotate_batch(x, [label, 0], 3)
    np.testing.assert_array_equal(out[0], np.rot90(x[0], k, axes=axes))  # axes of one (D, H, W, C) volume
    np.testing.assert_array_equal(out[1], x[1])


def test_rotation_2d_equals_rot90():
    x = np.random.default_rng(0).random((4, 5, 5, 3))
    out = T.rotate_batch(x, [0, 1, 2, 3], 2)
    for k in range(4):
        np.testing.assert_array_equal(out[k], np.rot90(x[k], k, axes=(0, 1)))


def test_rotation_of_non_cube_is_a_clear_error():
    with pytest.raises(DataError, match="equal sizes"):
        T.rotate_batch(np.zeros((1, 4, 6, 6, 1)), [4], 3)


def test_grid_geometry_documented_sizes():
    starts, patch = grid_geometry((128, 128, 128), 3, 3)
    assert patch == (39, 39, 39)
    np.testing.assert_array_equal(starts[0], [1, 43, 85])
    assert grid_geometry((224, 224), 3, 3)[1] == (71, 71)
    assert grid_geometry((128,) * 3, 4, 3)[1] == (29, 29, 29)
    with pytest.raises(ValueError):
        grid_geometry((8, 8, 8), 3, 3)


def test_patch_extraction_and_jitter_bounds():
    size, grid, jitter = 20, 3, 2
    x = np.arange(2 * size ** 3, dtype=np.float32).reshape(2, size, size, size, 1)
    starts, patch = grid_geometry((size,) * 3, grid, jitter)
    assert patch == (4, 4, 4)  # cells of 6, minus the jitter
    rng = np.random.default_rng(0)
    cells = np.broadcast_to(np.arange(27), (2, 27))
    corners = patch_corners((size,) * 3, grid, jitter, cells, rng)
    coords = np.stack(np.unravel_index(np.arange(27), (3, 3, 3)), -1)
    base = np.stack([starts[a][coords[:, a]] for a in range(3)], -1)
    offsets = corners - base[None]
    assert offsets.min() == 0 and offsets.max() == jitter  # jitter used fully, never beyond
    patches = extract_patches(x, corners, patch)
    assert patches.shape == (2, 27, 4, 4, 4, 1)
    for n, p in [(0, 0), (1, 13), (1, 26)]:
        z, y, w = corners[n, p]
        np.testing.assert_array_equal(patches[n, p], x[n, z:z + 4, y:y + 4, w:w + 4])
    # patches of one cell never leave the cell: no two patches overlap
    assert (corners.max(axis=1) + 4 <= size).all()


def test_jigsaw_transform_orders_tiles_by_the_permutation():
    x = np.zeros((2, 9, 9, 9, 1), np.float32)
    cell_id = np.arange(27).reshape(3, 3, 3)
    x[0, ..., 0] = np.kron(cell_id, np.ones((3, 3, 3)))  # each cell filled with its index
    x[1] = x[0]
    perms = np.array([np.arange(27), np.arange(27)[::-1]])
    patches, labels = T.jigsaw_transform(x, np.random.default_rng(0), perms, grid=3, jitter=0)
    assert patches.shape == (2, 27, 3, 3, 3, 1)
    for n in range(2):
        np.testing.assert_array_equal(patches[n, :, 0, 0, 0, 0], perms[labels[n]])


def test_rpl_transform_pairs_centre_with_labelled_neighbour():
    x = np.zeros((50, 9, 9, 9, 1), np.float32)
    x[..., 0] = np.kron(np.arange(27).reshape(3, 3, 3), np.ones((3, 3, 3)))
    patches, labels = T.rpl_transform(x, np.random.default_rng(0), grid=3, jitter=0)
    neighbours, centre = T.rpl_neighbours(3, 3)
    assert centre == 13 and len(neighbours) == 26 and 13 not in neighbours
    assert patches.shape == (50, 2, 3, 3, 3, 1)
    np.testing.assert_array_equal(patches[:, 0, 0, 0, 0, 0], 13)
    np.testing.assert_array_equal(patches[:, 1, 0, 0, 0, 0], neighbours[labels])
    assert labels.min() >= 0 and labels.max() <= 25
    _, labels2d = T.rpl_transform(np.zeros((100, 9, 9, 3)), np.random.default_rng(0), grid=3, jitter=0)
    assert labels2d.max() == 7


def test_cpc_transform_targets():
    from keras_ssl3d.layers.cpc import CPCPredictor, cpc_prediction_pairs

    predictor = CPCPredictor((4, 4, 4), embedding_dim=8, steps=2)
    targets = predictor.target_indices()
    assert len(cpc_prediction_pairs(4, 2)) == 5 and len(targets) == 5 * 16
    assert targets[0] == 16 and targets.max() == 63  # first prediction: row 1, cell 0
    patches, y = T.cpc_transform(_volumes(2, (16, 16, 16), 1), np.random.default_rng(0), 4, 1, targets)
    assert patches.shape == (2, 64, 3, 3, 3, 1) and y.shape == (2, 80)


def test_exemplar_augmentations():
    rng = np.random.default_rng(0)
    x = _volumes(8, (8, 8, 8), 1)
    assert np.array_equal(T.random_flip(x, rng, p=0.0), x)
    flipped = T.random_flip(x, rng, p=1.0)
    for n in range(8):
        assert any(np.array_equal(flipped[n], np.flip(x[n], a)) for a in range(3))
    c = T.random_brightness_contrast(x, rng, p=1.0)
    assert c.min() >= 0 and c.max() <= 1 and not np.allclose(c, x)
    np.testing.assert_allclose(T.zoom(x, np.ones(8)), x, atol=1e-6)  # factor 1 is the identity
    zoomed = T.zoom(x[:1], np.array([0.5]))
    assert zoomed[0, 0, 0, 0, 0] == 0  # zooming out samples background outside the volume
    (a, p), y = T.exemplar_transform(x, rng)
    assert a.shape == p.shape == x.shape and y.shape == (8,)
    assert np.array_equal(a, x)
    with pytest.raises(DataError):
        T.exemplar_transform(x[:1], rng)
