"""Every kind of bad input gives a one-line DataError naming the file and the problem, and
``preprocess --skip-bad`` goes on past it while the default stops with nothing written for it."""

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data import load_labeled_volumes, load_unlabeled_volumes, open_cache, preprocess_dataset
from keras_ssl3d.data.layouts import discover
from keras_ssl3d.data.preprocess import cache_name, label_mapping_for, preprocess_subject
from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.errors import DataError

SHAPE = (12, 12, 10)
SID = "BraTS_Synth_002"  # the subject that gets broken


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    return make_brats_like(tmp_path_factory.mktemp("clean"), n_subjects=3, shape=SHAPE, seed=0)


def _file(root, role):
    return root / SID / f"{SID}_{role}.nii.gz"


def _save(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine),
             str(path))


def corrupt_gzip(root):
    p = _file(root, "flair")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def not_nifti(root):
    p = _file(root, "t1")
    p.write_bytes(gzip.compress(b"this is a text file, not an image\n" * 20))
    return p


def not_gzip(root):
    p = _file(root, "t1")
    p.write_bytes(b"plain bytes named .nii.gz" * 20)
    return p


def missing_modality(root):
    p = _file(root, "t2")
    p.unlink()
    return root / SID


def shape_mismatch(root):
    p = _file(root, "t2")
    _save(p, np.ones((12, 12, 9), np.float32))
    return p


def affine_mismatch(root):
    p = _file(root, "t1ce")
    _save(p, np.ones(SHAPE, np.float32), affine=np.diag([-1.0, -1.0, 2.0, 1.0]))
    return p


def label_shape_mismatch(root):
    p = _file(root, "seg")
    _save(p, np.zeros((12, 12, 8), np.uint8))
    return p


def nan_voxels(root):
    p = _file(root, "flair")
    a = np.ones(SHAPE, np.float32)
    a[1, 2, 3] = np.nan
    a[2, 2, 2] = np.inf
    _save(p, a)
    return p


def all_zero(root):
    p = _file(root, "t1ce")
    _save(p, np.zeros(SHAPE, np.int16))
    return p


def two_d(root):
    p = _file(root, "t1")
    _save(p, np.ones((12, 12), np.float32))
    return p


def unexpected_labels(root):
    p = _file(root, "seg")
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:4, 2:4, 2:4] = 3
    _save(p, lab)
    return p


def four_d_modality(root):
    p = _file(root, "flair")  # a time axis: 5 volumes in a file that stands for one modality
    _save(p, np.ones((*SHAPE, 5), np.float32))
    return p


def duplicate_nii(root):
    p = _file(root, "flair")  # the same modality twice, as .nii.gz and as .nii
    shutil.copy(p, root / SID / f"{SID}_flair.nii")
    _save(root / SID / f"{SID}_flair.nii", np.ones(SHAPE, np.float32))
    return root / SID


def lone_modality(root):
    for role in ("t1", "t1ce", "t2"):  # a subject folder with one modality left was dropped unreported
        _file(root, role).unlink()
    return root / SID


def broken_symlink(root):
    p = _file(root, "t2")
    p.unlink()
    p.symlink_to(root / "nowhere" / "t2.nii.gz")
    return p


def zero_bytes(root):
    p = _file(root, "t1")
    p.write_bytes(b"")
    return p


def zero_affine(root):
    p = _file(root, "t1")
    img = nib.load(str(p))
    header = img.header.copy()
    header.set_qform(None, code=0)
    header.set_sform(np.zeros((4, 4)), code=1)  # an sform that maps every voxel to the origin
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, header=header), str(p))
    return p


CASES = [
    (corrupt_gzip, r"corrupt or truncated"),
    (not_nifti, r"not a NIfTI file"),
    (not_gzip, r"not a NIfTI file \(named \.gz but not gzip-compressed\)"),
    (missing_modality, r"missing modality t2"),
    (shape_mismatch, r"shape \(12, 12, 9\) differs from \(12, 12, 10\).*co-registered"),
    (affine_mismatch, r"affine differs.*co-registered"),
    (label_shape_mismatch, r"label shape \(12, 12, 8\) does not match image shape \(12, 12, 10\)"),
    (nan_voxels, r"contains 2 NaN/Inf voxels"),
    (all_zero, r"all zeros"),
    (two_d, r"2D image \(shape \(12, 12\)\), expected a 3D volume"),
    (unexpected_labels, r"unexpected label values \[3\] \(expected 0, 1, 2, 4\)"),
    (four_d_modality, r"has 5 volumes along its 4th axis \(shape \(12, 12, 10, 5\)\); a file holding one modality"),
    (duplicate_nii, r"two files for flair: BraTS_Synth_002_flair.nii and BraTS_Synth_002_flair.nii.gz \(keep one\)"),
    (lone_modality, r"missing modality t1, t1ce, t2"),
    (broken_symlink, r"broken symbolic link \(its target .*nowhere/t2.nii.gz does not exist\)"),
    (zero_bytes, r"empty file \(0 bytes\)"),
    (zero_affine, r"affine \(sform/qform\) is all zeros"),
]


@pytest.fixture
def broken(clean_dir, tmp_path, request):
    root = tmp_path / "data"
    shutil.copytree(clean_dir, root)
    return root


@pytest.mark.parametrize("breaker,message", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_message(broken, breaker, message):
    bad_path = breaker(broken)
    ds = discover(broken)
    subject = next(s for s in ds.subjects if s.id == SID)
    with pytest.raises(DataError, match=message) as e:
        preprocess_subject(subject, size=8, label_mapping=label_mapping_for(ds.label_names))
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(str(bad_path)), text  # names the file first
    assert len(text) < 300


SKIPPED = ("corrupt_gzip", "missing_modality", "unexpected_labels", "four_d_modality", "duplicate_nii")


@pytest.mark.parametrize("breaker,message", [c for c in CASES if c[0].__name__ in SKIPPED], ids=SKIPPED)
def test_preprocess_stops_or_skips(broken, breaker, message, tmp_path):
    breaker(broken)
    out = tmp_path / "cache"
    with pytest.raises(DataError, match=message):
        preprocess_dataset(broken, out, size=8)
    assert not (out / "images" / f"{cache_name(SID)}.npy").exists()
    assert not (out / "subjects" / f"{cache_name(SID)}.json").exists()
    summary = preprocess_dataset(broken, out, size=8, skip_bad=True)
    assert [sid for sid, _ in summary["failed"]] == [SID]
    cache = open_cache(out)
    assert cache.subject_ids == ["BraTS_Synth_001", "BraTS_Synth_003"]
    assert cache.manifest["skipped"][0]["id"] == SID
    # The convenience loader stops at the bad subject too, with the same message.
    with pytest.raises(DataError, match=message):
        load_labeled_volumes(broken, size=8)


def test_cli_error_is_one_line_and_skip_bad_reports(broken, tmp_path, capsys):
    bad = nan_voxels(broken)
    out = tmp_path / "cache"
    code = run_cli(cli, ["preprocess", str(broken), str(out), "--size", "8", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"Error: {bad}: contains 2 NaN/Inf voxels"]
    assert not (out / "images" / f"{cache_name(SID)}.npy").exists()
    code = run_cli(cli, ["preprocess", str(broken), str(out), "--size", "8", "--quiet", "--skip-bad",
                         "--workers", "2"])
    text = capsys.readouterr().out
    assert code == 0
    assert "1 skipped as bad, of 3" in text
    assert f"skipped {SID}: {bad}: contains 2 NaN/Inf voxels" in text


def test_subjects_with_other_channel_counts_are_named_before_stacking(tmp_path):
    # A folder data set of whole-image files: one case has 2 channels, the others 1.
    folder = tmp_path / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for case, channels in (("a", 1), ("b", 2), ("c", 1)):
        _save(folder / f"{case}.nii.gz", rng.random((*SHAPE, channels)).astype(np.float32) + 0.1)
    with pytest.raises(DataError, match=r"b.nii.gz: has 2 channel\(s\), the first subject \(a.nii.gz\) has 1"):
        load_unlabeled_volumes(folder, size=8)
