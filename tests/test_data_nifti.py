"""NIfTI reading and writing: channels-last RAS arrays, and label maps written back in the
input's own geometry."""

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d.data.nifti import load_label_volume, load_volume, save_label_map, save_volume
from keras_ssl3d.errors import DataError


def _write(path, array, affine):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def test_ras_file_loads_unchanged(tmp_path):
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    v = load_volume(_write(tmp_path / "x.nii.gz", a, affine))
    assert v.array.shape == (4, 5, 6, 1) and v.array.dtype == np.float32
    np.testing.assert_array_equal(v.array[..., 0], a)
    np.testing.assert_allclose(v.affine, affine)
    assert v.spacing == (2.0, 3.0, 4.0)
    assert v.original_shape == (4, 5, 6)


def test_lps_file_is_flipped_to_ras(tmp_path):
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    v = load_volume(_write(tmp_path / "x.nii", a, affine))
    np.testing.assert_array_equal(v.array[..., 0], a[::-1, ::-1, :])
    # The same world point is reached from the flipped index: voxel (0,0,0) of RAS is file voxel (3,4,0).
    world_ras = v.affine @ np.array([0, 0, 0, 1])
    world_file = affine @ np.array([3, 4, 0, 1])
    np.testing.assert_allclose(world_ras, world_file)
    assert np.all(np.diag(v.affine)[:3] > 0)


def test_permuted_axes_are_reordered(tmp_path):
    # File axes are (S, R, A): a permutation plus a flip of one axis.
    affine = np.array([[0, 2.0, 0, 0], [0, 0, -3.0, 0], [1.5, 0, 0, 0], [0, 0, 0, 1]])
    a = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32) + 0.1
    v = load_volume(_write(tmp_path / "p.nii.gz", a, affine))
    assert v.array.shape == (5, 6, 4, 1)
    assert v.spacing == (2.0, 3.0, 1.5)
    # Check one voxel through world coordinates.
    i, j, k = 1, 2, 3
    world = affine @ np.array([i, j, k, 1])
    ras_index = np.rint(np.linalg.inv(v.affine) @ world).astype(int)[:3]
    assert v.array[tuple(ras_index)][0] == a[i, j, k]


@pytest.mark.parametrize("affine", [
    np.diag([-1.0, -1.0, 1.0, 1.0]),
    np.array([[0, 0, -2.0, 5], [1.0, 0, 0, -3], [0, -1.5, 0, 7], [0, 0, 0, 1]]),
])
def test_save_label_map_round_trip_gives_input_geometry(tmp_path, affine):
    rng = np.random.default_rng(1)
    a = rng.random((6, 7, 8)).astype(np.float32) + 0.1
    src = _write(tmp_path / "img.nii.gz", a, affine)
    v = load_volume(src)
    labels_ras = (v.array[..., 0] > 0.6).astype(np.uint8) + (v.array[..., 0] > 0.9)
    out = save_label_map(labels_ras, v, tmp_path / "pred.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (6, 7, 8)
    np.testing.assert_allclose(img.affine, affine)
    expected = (a > 0.6).astype(np.uint8) + (a > 0.9)
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected)
    # And reading the written map back through the RAS loader gives the RAS labels again.
    np.testing.assert_array_equal(load_label_volume(out, reference=v), labels_ras)
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_four_d_file_channels_and_list_of_modalities(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.random((4, 5, 6, 3)).astype(np.float32) + 0.1
    v = load_volume(_write(tmp_path / "four.nii.gz", a, np.eye(4)))
    assert v.array.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(v.array, a)
    p1 = _write(tmp_path / "m1.nii.gz", a[..., 0], np.eye(4))
    p2 = _write(tmp_path / "m2.nii.gz", a[..., 1], np.eye(4))
    v2 = load_volume([p2, p1])
    np.testing.assert_allclose(v2.array, a[..., [1, 0]])
    assert v2.paths == [p2, p1]


def test_save_volume_and_shape_check(tmp_path):
    a = np.ones((4, 4, 4), np.float32)
    p = save_volume(a, np.eye(4), tmp_path / "a.nii")
    v = load_volume(p)
    with pytest.raises(DataError, match="does not match the reference"):
        save_label_map(np.zeros((3, 4, 4), np.uint8), v, tmp_path / "bad.nii.gz")


def test_scaled_integer_file_is_read_as_float(tmp_path):
    img = nib.Nifti1Image(np.full((3, 3, 3), 10, np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 1.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    v = load_volume(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(v.array, 6.0)
