"""Preprocessing numerics on small known arrays, and the cache writer (parallel, resumable)."""

import json
import os

import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data import labels_to_original, load_volume, open_cache, preprocess_dataset, save_label_map
from keras_ssl3d.data.layouts import discover
from keras_ssl3d.data.preprocess import (
    cache_name,
    crop_to_foreground,
    foreground_bbox,
    label_mapping_for,
    preprocess_subject,
    remap_labels,
    resize_labels,
    resize_volume,
    scale_intensity,
)
from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.errors import DataError

SHAPE = (16, 16, 12)


def test_crop_to_foreground_box_and_margin():
    a = np.zeros((6, 7, 8, 2), np.float32)
    a[2:4, 1:5, 3, 0] = 1.0
    a[1, 2, 6, 1] = 2.0  # the other channel extends the box
    label = np.arange(6 * 7 * 8).reshape(6, 7, 8)
    img, lab, box = crop_to_foreground(a, label)
    assert box == [(1, 4), (1, 5), (3, 7)]
    assert img.shape == (3, 4, 4, 2)
    np.testing.assert_array_equal(lab, label[1:4, 1:5, 3:7])
    _, _, box = crop_to_foreground(a, margin=2)
    assert box == [(0, 6), (0, 7), (1, 8)]
    # CT-like: background is the channel minimum, not zero.
    ct = np.full((5, 5, 5, 1), -1000.0, np.float32)
    ct[1:3, 2, 2:4] = 40.0
    assert foreground_bbox(ct) == [(1, 3), (2, 3), (2, 4)]
    assert foreground_bbox(np.zeros((3, 4, 5))) == [(0, 3), (0, 4), (0, 5)]


def test_resize_volume_linear_ramp_and_hand_values():
    # Half-pixel centres: 4 -> 2 samples at x = 0.5 and 2.5.
    a = np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], (4, 3, 3))
    out = resize_volume(a, (2, 3, 3))
    np.testing.assert_allclose(out[:, 0, 0], [0.5, 2.5])
    # 2 -> 4: x = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1) on values [0, 10].
    b = np.broadcast_to(np.array([0.0, 10.0], np.float32)[:, None, None], (2, 2, 2))
    np.testing.assert_allclose(resize_volume(b, (4, 2, 2))[:, 0, 0], [0.0, 2.5, 7.5, 10.0])
    # Channels are independent; a constant stays constant; identity size is a no-op.
    c = np.random.default_rng(0).random((5, 6, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(resize_volume(c, (5, 6, 7)), c)
    out = resize_volume(c, 4)
    assert out.shape == (4, 4, 4, 2) and out.dtype == np.float32
    assert c.min() <= out.min() and out.max() <= c.max()
    np.testing.assert_allclose(resize_volume(np.full((9, 5, 3), 3.0), (4, 8, 6)), 3.0)


def test_resize_volume_matches_separable_reference():
    rng = np.random.default_rng(1)
    a = rng.random((6, 5, 4)).astype(np.float32)
    out = resize_volume(a, (3, 7, 8))

    def lin(v, n):
        m = len(v)
        x = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
        return np.interp(x, np.arange(m), v)

    ref = np.apply_along_axis(lin, 0, a, 3)
    ref = np.apply_along_axis(lin, 1, ref, 7)
    ref = np.apply_along_axis(lin, 2, ref, 8)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_resize_labels_nearest_keeps_values():
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[:2] = 4
    lab[2:, :, :2] = 2
    out = resize_labels(lab, (8, 2, 2))
    assert set(np.unique(out)) == {0, 2, 4}
    np.testing.assert_array_equal(out[:4, 0, 0], [4, 4, 4, 4])
    np.testing.assert_array_equal(out[4:, 0, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(out[4:, 0, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(resize_labels(lab, (2, 2, 2))[:, 0, 0], [4, 2])


def test_scale_intensity_modes():
    x = np.zeros((2, 2, 2, 2), np.float32)
    x[..., 0] = np.arange(8).reshape(2, 2, 2)
    x[..., 1] = np.arange(8).reshape(2, 2, 2) * 10 + 100
    mm = scale_intensity(x, "minmax")
    np.testing.assert_allclose(mm[..., 0].ravel(), np.arange(8) / 7)
    np.testing.assert_allclose(mm[..., 1].ravel(), np.arange(8) / 7, atol=1e-6)
    # Constant channel -> zeros, not NaN.
    assert np.all(scale_intensity(np.ones((2, 2, 2, 1)), "minmax") == 0)
    # Percentile: one bright outlier does not squash the rest; percentiles over the foreground.
    y = np.zeros((10, 10, 10, 1), np.float32)
    y[:5] = np.linspace(1, 2, 500).reshape(5, 10, 10, 1)
    y[9, 9, 9] = 1000.0
    p = scale_intensity(y, "percentile", percentiles=(0.0, 99.0))
    assert p.max() == 1.0 and p[9, 9, 9, 0] == 1.0
    assert 0.45 < p[2, 5, 5, 0] < 0.55  # the middle of the 1..2 ramp lands mid-range
    assert scale_intensity(y, "minmax")[2, 5, 5, 0] < 0.01
    # CT window: fixed HU range.
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0], np.float32).reshape(5, 1, 1, 1)
    np.testing.assert_allclose(scale_intensity(hu, "ct_window", window=(-160, 240)).ravel(), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError):
        scale_intensity(hu, "zscore")


def test_remap_labels_brats():
    mapping = label_mapping_for({0: "bg", 1: "ncr", 2: "ed", 4: "et"})
    assert mapping == {0: 0, 1: 1, 2: 2, 4: 3}
    lab = np.array([0, 1, 2, 4, 4]).reshape(5, 1, 1)
    np.testing.assert_array_equal(remap_labels(lab, mapping).ravel(), [0, 1, 2, 3, 3])
    with pytest.raises(DataError, match=r"unexpected label values \[3\] \(expected 0, 1, 2, 4\)"):
        remap_labels(np.array([0, 3]), mapping, path="seg.nii.gz")


@pytest.fixture(scope="module")
def brats_dir(tmp_path_factory):
    return make_brats_like(tmp_path_factory.mktemp("brats"), n_subjects=4, shape=SHAPE, seed=0)


def test_preprocess_subject_and_map_back(brats_dir, tmp_path):
    ds = discover(brats_dir)
    s = ds.subjects[0]
    image, label, info = preprocess_subject(s, size=8, crop_foreground=True, label_mapping={0: 0, 1: 1, 2: 2, 4: 3})
    assert image.shape == (8, 8, 8, 4) and image.dtype == np.float32
    assert label.shape == (8, 8, 8) and label.dtype == np.uint8
    np.testing.assert_allclose(image.reshape(-1, 4).min(0), 0)
    np.testing.assert_allclose(image.reshape(-1, 4).max(0), 1)
    assert info["original_shape"] == list(SHAPE)
    assert info["label_values"] == [0, 1, 2, 4]
    box = info["crop_bbox"]
    assert all(0 <= a < b <= n for (a, b), n in zip(box, SHAPE)) and box != [[0, n] for n in SHAPE]
    # A prediction at 8^3 goes back to the full RAS grid and raw values, then to the file geometry.
    full = labels_to_original(label, info, {0: 0, 1: 1, 2: 2, 3: 4})
    assert full.shape == tuple(info["ras_shape"]) and set(np.unique(full)) <= {0, 1, 2, 4}
    out = save_label_map(full, load_volume(s.image_paths), tmp_path / "pred.nii.gz")
    import nibabel as nib

    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, nib.load(str(s.label)).affine)
    assert img.shape == SHAPE


def test_preprocess_dataset_parallel_and_resumable(brats_dir, tmp_path):
    out = tmp_path / "cache"
    seen = []
    summary = preprocess_dataset(brats_dir, out, size=8, workers=2, progress=lambda sid, st: seen.append(st))
    assert summary["done"] == 4 and summary["already_done"] == 0 and summary["failed"] == []
    assert seen == ["done"] * 4
    cache = open_cache(out)
    assert len(cache) == 4 and cache.modalities == ["t1", "t1ce", "t2", "flair"] and cache.num_classes == 4
    assert cache.subject_ids == [f"BraTS_Synth_{i:03d}" for i in range(1, 5)]
    first = np.array(cache.image(0))
    assert first.shape == (8, 8, 8, 4) and isinstance(cache.image(0), np.memmap)
    m = cache.manifest
    assert m["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert m["inverse_label_mapping"]["3"] == 4
    assert m["subjects"][0]["original_affine"][0][0] == -1.0
    # Simulate an interruption: one subject's record and label are gone, another left a temp file.
    rec = out / "subjects" / f"{cache_name('BraTS_Synth_002')}.json"
    rec.unlink()
    (out / "labels" / f"{cache_name('BraTS_Synth_003')}.npy").unlink()
    (out / "images" / ".BraTS_Synth_004.npy.abc.tmp.npy").write_bytes(b"partial")
    before = os.stat(out / "images" / f"{cache_name('BraTS_Synth_001')}.npy").st_mtime_ns
    seen.clear()
    summary = preprocess_dataset(brats_dir, out, size=8, workers=1, progress=lambda sid, st: seen.append(st))
    assert summary["done"] == 2 and summary["already_done"] == 2
    assert sorted(seen) == ["done", "done", "skipped", "skipped"]
    assert os.stat(out / "images" / f"{cache_name('BraTS_Synth_001')}.npy").st_mtime_ns == before  # not rewritten
    assert rec.is_file()
    cache = open_cache(out)
    assert len(cache) == 4
    np.testing.assert_array_equal(np.array(cache.image(0)), first)
    # A cache made with other settings is not silently mixed.
    with pytest.raises(DataError, match=r"other settings \(size\)"):
        preprocess_dataset(brats_dir, out, size=16)


def test_cli_preprocess_interrupted_then_resumed(brats_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    # Interrupted run: the first two subjects only (as a killed process would leave them).
    partial = tmp_path / "partial"
    partial.mkdir()
    for d in sorted(brats_dir.iterdir())[:2]:
        os.symlink(d, partial / d.name)
    assert run_cli(cli, ["preprocess", str(partial), str(out), "--size", "8", "--quiet"]) == 0
    assert len(list((out / "subjects").glob("*.json"))) == 2
    # The settings record names the source: resuming with the full folder uses the same path.
    settings = json.loads((out / "settings.json").read_text())
    settings["source"] = str(brats_dir.resolve())
    (out / "settings.json").write_text(json.dumps(settings))
    capsys.readouterr()
    code = run_cli(cli, ["preprocess", str(brats_dir), str(out), "--size", "8", "--workers", "2"])
    text = capsys.readouterr()
    assert code == 0
    assert "2 subjects preprocessed, 2 already done, 0 skipped as bad, of 4" in text.out
    assert "preprocessing" in text.err  # the progress bar
    assert len(open_cache(out)) == 4


def test_cli_preprocess_msd_crop_and_scale(tmp_path, capsys):
    from keras_ssl3d.data.synthetic import make_pancreas_like

    src = make_pancreas_like(tmp_path / "Task07", n=2, shape=(16, 16, 8), n_test=1)
    code = run_cli(cli, ["preprocess", str(src), str(tmp_path / "c"), "--size", "8", "--crop-foreground",
                         "--scale", "ct_window", "--quiet"])
    assert code == 0
    cache = open_cache(tmp_path / "c")
    assert len(cache) == 3 and cache.modalities == ["CT"] and cache.num_classes == 3
    assert cache.label(2) is None and cache.label(0).dtype == np.uint8
    m = cache.manifest
    assert m["scale"] == "ct_window" and m["crop_foreground"] is True
    assert m["subjects"][0]["spacing"] == pytest.approx([0.8, 0.8, 2.5])
