"""Synthetic data: deterministic, in the real layouts, with BraTS-like contrasts, and learnable."""

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d.data.preprocess import scale_intensity
from keras_ssl3d.data.synthetic import (
    BRATS_MODALITIES,
    brats_like_arrays,
    fundus_like_arrays,
    fundus_like_image,
    make_brats_like,
    make_pancreas_like,
    pancreas_like_arrays,
)

SHAPE = (64, 64, 48)  # the default size
T1, T1CE, T2, FLAIR = range(4)


@pytest.fixture(scope="module")
def brats():
    return brats_like_arrays(6, SHAPE, seed=0)


def test_deterministic_and_subject_independent_of_n():
    a, la = brats_like_arrays(3, (16, 16, 12), seed=5)
    b, lb = brats_like_arrays(2, (16, 16, 12), seed=5)
    np.testing.assert_array_equal(a[:2], b)
    np.testing.assert_array_equal(la[:2], lb)
    c, _ = brats_like_arrays(2, (16, 16, 12), seed=6)
    assert not np.allclose(a[:2], c)


def test_brats_like_labels_and_anatomy_vary(brats):
    images, labels = brats
    assert images.shape == (6, *SHAPE, 4) and images.dtype == np.float32
    assert labels.dtype == np.uint8
    for img, lab in zip(images, labels):
        assert set(np.unique(lab)) == {0, 1, 2, 4}
        brain = img[..., T1] > 0
        assert np.all(brain[lab > 0])  # the tumour is inside the brain
        assert 0.2 < brain.mean() < 0.8  # background is skull-stripped zero
    brain_sizes = (images[..., T1] > 0).sum(axis=(1, 2, 3))
    tumour_centres = [np.argwhere(lab > 0).mean(0) for lab in labels]
    assert len(set(brain_sizes.tolist())) == 6
    assert np.std([c[0] for c in tumour_centres]) > 1.0


def test_brats_like_contrasts_match_brats(brats):
    images, labels = brats
    for img, lab in zip(images, labels):
        img = scale_intensity(img)
        normal = (img[..., T1] > 0) & (lab == 0)

        def mean(region, ch):
            return img[..., ch][region].mean()

        oedema, enhancing, necrotic = lab == 2, lab == 4, lab == 1
        # Oedema bright on FLAIR and T2 compared with normal brain.
        assert mean(oedema, FLAIR) > mean(normal, FLAIR) + 0.2
        assert mean(oedema, T2) > mean(normal, T2) + 0.05
        # Enhancing rim bright on T1ce (the brightest tissue); necrotic core dark on T1ce.
        assert mean(enhancing, T1CE) > max(mean(normal, T1CE), mean(oedema, T1CE)) + 0.05
        assert mean(necrotic, T1CE) < mean(enhancing, T1CE) - 0.15
        assert mean(necrotic, T1CE) < mean(normal, T1CE)
        # Enhancement is specific to T1ce: on T1 the rim is not the brightest tissue.
        assert mean(enhancing, T1) < mean(normal, T1) + 0.1


def test_make_brats_like_files(tmp_path):
    root = make_brats_like(tmp_path, n_subjects=2, shape=(16, 16, 12), seed=0)
    subjects = sorted(p.name for p in root.iterdir())
    assert subjects == ["BraTS_Synth_001", "BraTS_Synth_002"]
    d = root / subjects[1]
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(f"BraTS_Synth_002_{m}.nii.gz" for m in (*BRATS_MODALITIES, "seg"))
    img = nib.load(str(d / "BraTS_Synth_002_flair.nii.gz"))
    assert img.shape == (16, 16, 12) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    seg = np.asarray(nib.load(str(d / "BraTS_Synth_002_seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) <= {0, 1, 2, 4}
    # The same seed writes the same data.
    again = make_brats_like(tmp_path / "again", n_subjects=2, shape=(16, 16, 12), seed=0)
    a = np.asarray(nib.load(str(again / subjects[1] / "BraTS_Synth_002_flair.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, np.asarray(img.dataobj))


def test_pancreas_like_ct(tmp_path):
    hu, labels = pancreas_like_arrays(4, seed=0)
    assert hu.shape == (4, 64, 64, 32, 1)
    assert hu.min() < -900 and hu.max() > 300  # air and bone, in Hounsfield units
    for h, lab in zip(hu[..., 0], labels):
        assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).any()
        assert 60 < h[lab == 1].mean() < 130  # enhancing pancreas, portal-venous phase
        if (lab == 2).any():
            assert h[lab == 2].mean() < h[lab == 1].mean() - 20  # hypodense tumour
    assert sum((lab == 2).any() for lab in labels) >= 2
    root = make_pancreas_like(tmp_path, n=2, shape=(16, 16, 8), n_test=1)
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["pancreas_001.nii.gz", "pancreas_002.nii.gz"]
    assert (root / "imagesTs" / "pancreas_003.nii.gz").is_file()
    img = nib.load(str(root / "imagesTr" / "pancreas_001.nii.gz"))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], [0.8, 0.8, 2.5])


def test_fundus_lesions_grow_with_grade():
    base = fundus_like_image(96, 0, seed=0, index=3).astype(int)
    changed = []
    for grade in range(5):
        img = fundus_like_image(96, grade, seed=0, index=3).astype(int)
        changed.append(int((np.abs(img - base).max(-1) > 40).sum()))
    assert changed[0] == 0
    assert changed == sorted(changed) and changed[4] > changed[1] > 0
    images, grades = fundus_like_arrays(10, 32, seed=1)
    assert images.shape == (10, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    assert sorted(grades.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def _smooth(a, passes=4):
    from keras_ssl3d.data.synthetic import _blur

    for _ in range(passes):
        a = _blur(a)
    return a


def _voxel_features(volume):
    """Per-voxel intensities and bias-corrected contrasts (each channel over its local brain mean),
    with their pairwise products: what a tiny voxel classifier can learn from."""
    brain = (volume[..., 0] > 0).astype(np.float32)
    den = np.maximum(_smooth(brain), 1e-3)
    cols = []
    for c in range(volume.shape[-1]):
        ch = volume[..., c]
        cols += [ch, ch / np.maximum(_smooth(ch) / den, 1e-3) * brain]
    f = np.stack(cols, -1)
    n = f.shape[-1]
    quad = [f[..., i] * f[..., j] for i in range(n) for j in range(i, n)]
    f = np.concatenate([f, np.stack(quad, -1), np.ones(f.shape[:-1] + (1,), np.float32)], -1)
    return f.reshape(-1, f.shape[-1])


def test_whole_tumour_is_learnable_from_other_subjects():
    """Cheap learnability check (the U-Net one is benchmarks/synthetic_learnability.py): a
    least-squares voxel classifier fitted on 5 subjects finds the whole tumour of 3 unseen ones."""
    images, labels = brats_like_arrays(8, (40, 40, 30), seed=1)
    feats = [_voxel_features(scale_intensity(v)) for v in images]
    targets = [(lab > 0).ravel() for lab in labels]
    x_train = np.concatenate(feats[:5])[::4]
    y_train = np.concatenate(targets[:5])[::4].astype(np.float32) * 2 - 1
    w, *_ = np.linalg.lstsq(x_train, y_train, rcond=None)

    def dice(i, weights):
        pred, true = feats[i] @ weights > 0, targets[i]
        return 2 * (pred & true).sum() / (pred.sum() + true.sum())

    dices = [dice(i, w) for i in range(5, 8)]
    assert np.mean(dices) > 0.7 and min(dices) > 0.5, dices
    # Control: the same classifier fitted on shuffled targets learns nothing.
    w_null, *_ = np.linalg.lstsq(x_train, np.random.default_rng(0).permutation(y_train), rcond=None)
    assert np.mean([dice(i, w_null) for i in range(5, 8)]) < 0.4
