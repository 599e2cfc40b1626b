"""Each data set layout, read from real files written to a temp dir."""

import json

import numpy as np
import pytest

from keras_ssl3d.data import load_images_2d, load_labeled_volumes, load_unlabeled_volumes
from keras_ssl3d.data.layouts import detect_layout, discover
from keras_ssl3d.data.nifti import save_volume
from keras_ssl3d.data.synthetic import (
    brats_like_arrays,
    make_brats_like,
    make_fundus_like,
    make_msd_brain_like,
    make_pancreas_like,
)
from keras_ssl3d.errors import DataError

SHAPE = (16, 16, 12)


@pytest.fixture(scope="module")
def brats_dir(tmp_path_factory):
    return make_brats_like(tmp_path_factory.mktemp("brats"), n_subjects=3, shape=SHAPE, seed=0)


def test_brats_layout(brats_dir):
    ds = discover(brats_dir)
    assert ds.layout == "brats"
    assert ds.modalities == ["t1", "t1ce", "t2", "flair"]
    assert [s.id for s in ds.subjects] == ["BraTS_Synth_001", "BraTS_Synth_002", "BraTS_Synth_003"]
    s = ds.subjects[0]
    assert s.images["flair"].name == "BraTS_Synth_001_flair.nii.gz"
    assert s.label.name == "BraTS_Synth_001_seg.nii.gz"
    assert ds.label_names[4] == "enhancing tumor"


def test_brats_modality_order_is_configurable(brats_dir):
    ds = discover(brats_dir, layout="brats", modalities=["flair", "t1"])
    assert ds.modalities == ["flair", "t1"]
    x, y, info = load_labeled_volumes(brats_dir, size=8, layout="brats", modalities=["flair", "t1"])
    assert x.shape == (3, 8, 8, 8, 2)
    assert info["modalities"] == ["flair", "t1"]


def test_brats_labels_are_remapped_4_to_3(brats_dir):
    x, y, info = load_labeled_volumes(brats_dir, size=16)
    assert x.shape == (3, 16, 16, 16, 4) and x.dtype == np.float32
    assert y.shape == (3, 16, 16, 16) and y.dtype == np.uint8
    assert set(np.unique(y)) <= {0, 1, 2, 3} and 3 in np.unique(y)
    assert info["num_classes"] == 4
    assert info["label_mapping"] == {0: 0, 1: 1, 2: 2, 4: 3}
    assert info["inverse_label_mapping"][3] == 4
    assert info["label_names"][3] == "enhancing tumor"
    assert info["subject_ids"][0] == "BraTS_Synth_001"
    assert 0.0 <= x.min() and x.max() <= 1.0 and np.isclose(x.max(), 1.0)


def test_msd_pancreas_layout(tmp_path):
    root = make_pancreas_like(tmp_path / "Task07", n=3, shape=(16, 16, 8), n_test=1)
    ds = discover(root)
    assert ds.layout == "msd"
    assert ds.modalities == ["CT"]
    assert ds.label_names == {0: "background", 1: "pancreas", 2: "cancer"}
    assert [s.split for s in ds.subjects] == ["train", "train", "train", "test"]
    assert ds.subjects[-1].label is None
    x, y, info = load_labeled_volumes(root, size=8)
    assert x.shape == (3, 8, 8, 8, 1) and info["num_classes"] == 3
    u = load_unlabeled_volumes(root, size=8)
    assert u.shape == (4, 8, 8, 8, 1)  # test images too


def test_msd_four_d_images_and_channel_selection(tmp_path):
    root = make_msd_brain_like(tmp_path / "Task01", n_subjects=2, shape=(12, 12, 8))
    ds = discover(root, layout="msd")
    assert ds.modalities == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert len(ds.subjects[0].image_paths) == 1  # one 4D file holds every modality
    x, y, info = load_labeled_volumes(root, size=8)
    assert x.shape == (2, 8, 8, 8, 4) and set(np.unique(y)) <= {0, 1, 2, 3}
    x2, _, info2 = load_labeled_volumes(root, size=8, modalities=["t2w", "flair"])
    assert info2["modalities"] == ["T2w", "FLAIR"]
    np.testing.assert_allclose(x2[..., 1], x[..., 0])
    np.testing.assert_allclose(x2[..., 0], x[..., 3])


def _write_arrays(folder, names, images, labels=None, label_dir=None, suffix="_seg"):
    for i, name in enumerate(names):
        for c in range(images.shape[-1]):
            tag = f"_{c:04d}" if images.shape[-1] > 1 else ""
            save_volume(images[i, ..., c], np.eye(4), folder / f"{name}{tag}.nii.gz")
        if labels is not None:
            target = (folder / label_dir / f"{name}.nii.gz") if label_dir else folder / f"{name}{suffix}.nii.gz"
            save_volume(labels[i], np.eye(4), target)


def test_folder_layout_single_modality_with_label_suffix(tmp_path):
    x, y = brats_like_arrays(2, SHAPE, seed=1)
    _write_arrays(tmp_path, ["a", "b"], x[..., 3:], y, suffix="_seg")
    ds = discover(tmp_path)
    assert ds.layout == "folder" and ds.modalities == ["image"]
    assert [(s.id, s.label.name) for s in ds.subjects] == [("a", "a_seg.nii.gz"), ("b", "b_seg.nii.gz")]
    images, labels, info = load_labeled_volumes(tmp_path, size=8)
    assert images.shape == (2, 8, 8, 8, 1)
    assert info["num_classes"] == 5 and info["label_mapping"] is None  # values kept as they are


def test_folder_layout_nnunet_channels_and_labels_dir(tmp_path):
    x, y = brats_like_arrays(2, SHAPE, seed=2)
    (tmp_path / "imagesTr").mkdir()
    _write_arrays(tmp_path / "imagesTr", ["case1", "case2"], x, None)
    (tmp_path / "labelsTr").mkdir()
    for i, name in enumerate(["case1", "case2"]):
        save_volume(y[i], np.eye(4), tmp_path / "labelsTr" / f"{name}.nii.gz")
    ds = discover(tmp_path, layout="folder", modalities=["t1", "t1ce", "t2", "flair"])
    assert ds.modalities == ["t1", "t1ce", "t2", "flair"]
    assert ds.subjects[0].images["flair"].name == "case1_0003.nii.gz"
    assert ds.subjects[1].label.name == "case2.nii.gz"
    assert ds.subjects[0].split == "train"


def test_folder_layout_named_modalities(tmp_path):
    x, _ = brats_like_arrays(1, SHAPE, seed=3)
    for c, m in enumerate(["t1", "flair"]):
        save_volume(x[0, ..., c], np.eye(4), tmp_path / f"subj_{m}.nii.gz")
    ds = discover(tmp_path, layout="folder", modalities=["flair", "t1"])
    assert [s.id for s in ds.subjects] == ["subj"]
    assert ds.subjects[0].images["flair"].name == "subj_flair.nii.gz"
    with pytest.raises(DataError, match="missing modality t2"):
        discover(tmp_path, layout="folder", modalities=["flair", "t2"])


def test_csv_layout(tmp_path):
    x, y = brats_like_arrays(2, SHAPE, seed=4)
    (tmp_path / "scans").mkdir()
    rows = ["subject,t1,flair,label"]
    for i in range(2):
        save_volume(x[i, ..., 0], np.eye(4), tmp_path / "scans" / f"s{i}_t1.nii.gz")
        save_volume(x[i, ..., 3], np.eye(4), tmp_path / "scans" / f"s{i}_flair.nii.gz")
        save_volume(y[i], np.eye(4), tmp_path / "scans" / f"s{i}_mask.nii.gz")
        rows.append(f"S{i},scans/s{i}_t1.nii.gz,scans/s{i}_flair.nii.gz,scans/s{i}_mask.nii.gz")
    (tmp_path / "subjects.csv").write_text("\n".join(rows) + "\n")
    assert detect_layout(tmp_path / "subjects.csv") == "csv"
    ds = discover(tmp_path / "subjects.csv")
    assert ds.layout == "csv" and ds.modalities == ["t1", "flair"]
    assert [s.id for s in ds.subjects] == ["S0", "S1"]
    assert ds.subjects[1].label.name == "s1_mask.nii.gz"
    # A folder holding one CSV (and NIfTI files only in sub-folders) is detected as csv too.
    assert discover(tmp_path).layout == "csv"
    images, labels, _ = load_labeled_volumes(tmp_path, size=8)
    assert images.shape == (2, 8, 8, 8, 2)


def test_auto_detection_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data set found"):
        discover(tmp_path / "empty")
    amb = tmp_path / "amb"
    make_brats_like(amb, n_subjects=1, shape=(8, 8, 8))
    save_volume(np.ones((4, 4, 4), np.float32), np.eye(4), amb / "loose.nii.gz")
    with pytest.raises(DataError, match=r"ambiguous.*brats and folder.*--layout") as e:
        discover(amb)
    assert "\n" not in str(e.value)
    assert discover(amb, layout="brats").layout == "brats"
    with pytest.raises(DataError, match="unknown layout"):
        discover(amb, layout="nifti")
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")


def test_msd_dataset_json_errors(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable dataset.json"):
        discover(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": []}))
    with pytest.raises(DataError, match="no subjects"):
        discover(tmp_path)


def test_load_unlabeled_crops_foreground(brats_dir):
    cropped = load_unlabeled_volumes(brats_dir, size=16, crop_foreground=True)
    full = load_unlabeled_volumes(brats_dir, size=16, crop_foreground=False)
    assert cropped.shape == full.shape == (3, 16, 16, 16, 4)
    # Cropping removes empty border: the cropped volumes hold fewer zero voxels.
    assert (cropped == 0).mean() < (full == 0).mean()


def test_images_2d_csv_and_subfolders(tmp_path):
    root = make_fundus_like(tmp_path / "fundus", n=5, size=32, seed=0)
    images, grades = load_images_2d(root, size=24)
    assert images.shape == (5, 24, 24, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert sorted(grades.tolist()) == [0, 1, 2, 3, 4]
    # Sub-folder names as grades.
    from PIL import Image

    for g in (0, 3):
        (tmp_path / "sub" / str(g)).mkdir(parents=True)
        Image.fromarray(np.full((10, 12, 3), 40 * g, np.uint8)).save(tmp_path / "sub" / str(g) / "x.jpg")
    images, grades = load_images_2d(tmp_path / "sub", size=8)
    assert grades.tolist() == [0, 3] and images.shape == (2, 8, 8, 3)
    # A plain folder: no grades.
    _, none = load_images_2d(tmp_path / "sub" / "3", size=8)
    assert none is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("not a png")
    with pytest.raises(DataError, match="unreadable image"):
        load_images_2d(tmp_path / "bad")
