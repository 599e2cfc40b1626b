"""Surface distances (HD95, mean surface distance) in mm: MONAI's definitions, the BraTS empty-mask convention,
the voxel spacing of the scored grid, and their place in `evaluate_segmentation` / `evaluate_model`.

The MONAI comparisons are skipped where MONAI is not installed (it comes with the ``test`` extra).
"""

import numpy as np
import pytest

from keras_ssl3d.errors import ConfigError, DataError
from keras_ssl3d.finetune import metrics as M
from keras_ssl3d.finetune.evaluation import grid_spacing
from keras_ssl3d.finetune.surface import hd95, max_distance, mean_surface_distance, surface_scores

# MONAI returns float32 distances (KD-tree in float64, then cast); ours stay float64.
TOLERANCE = dict(rtol=1e-5, atol=1e-4)  # mm
SPACING = (0.9, 1.3, 3.0)  # anisotropic, as a typical 1 x 1 x 3 mm scan


def _blobs(shape, num_classes, seed):
    """A random label map of smooth blobs (surfaces with many shapes), background 0 included."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(num_classes, *shape)), sigma=(0, 2.0, 2.0, 1.2))
    labels = noise.argmax(axis=0)
    labels[noise.max(axis=0) < np.quantile(noise.max(axis=0), 0.4)] = 0
    return labels.astype(np.uint8)


def _one_hot(labels, num_classes):
    import torch

    return torch.from_numpy(np.stack([labels == k for k in range(num_classes)])[None].astype(np.float32))


@pytest.fixture(scope="module")
def monai_metrics():
    pytest.importorskip("torch", reason="torch is not installed (MONAI needs it; pip install 'keras-ssl3d[test]')")
    metrics = pytest.importorskip("monai.metrics", reason="MONAI is not installed (pip install 'keras-ssl3d[test]')")
    return metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("include_background", [True, False])
def test_hd95_and_msd_match_monai_on_random_label_maps(monai_metrics, seed, include_background):
    shape, k = (22, 18, 12), 4
    pred, true = _blobs(shape, k, seed), _blobs(shape, k, seed + 100)
    hd = monai_metrics.HausdorffDistanceMetric(include_background=include_background, percentile=95)
    sd = monai_metrics.SurfaceDistanceMetric(include_background=include_background, symmetric=True)
    expected_hd = hd(_one_hot(pred, k), _one_hot(true, k), spacing=SPACING).numpy()[0]
    expected_sd = sd(_one_hot(pred, k), _one_hot(true, k), spacing=SPACING).numpy()[0]
    classes = range(0 if include_background else 1, k)
    assert all((pred == c).any() and (true == c).any() for c in classes)  # no empty mask: MONAI's nan/inf
    got_hd = [hd95(pred == c, true == c, SPACING) for c in classes]
    got_sd = [mean_surface_distance(pred == c, true == c, SPACING) for c in classes]
    np.testing.assert_allclose(got_hd, expected_hd, **TOLERANCE)
    np.testing.assert_allclose(got_sd, expected_sd, **TOLERANCE)
    assert min(got_hd) > 0


def test_brats_regions_match_monai(monai_metrics):
    # BraTS regions (nested unions of labels) scored as MONAI scores a one-hot of each region.
    pred = np.choose(_blobs((20, 20, 10), 4, 7), [0, 1, 2, 4]).astype(np.uint8)
    true = np.choose(_blobs((20, 20, 10), 4, 8), [0, 1, 2, 4]).astype(np.uint8)
    regions = M.brats_regions()
    structures = M.surface_structures(pred, true, ["bg", "a", "b", "c"], regions)
    assert list(structures) == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    import torch

    y_pred = torch.from_numpy(np.stack([p for p, _ in structures.values()])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([t for _, t in structures.values()])[None].astype(np.float32))
    expected = monai_metrics.HausdorffDistanceMetric(include_background=True, percentile=95)(
        y_pred, y, spacing=SPACING).numpy()[0]
    got = [hd95(p, t, SPACING) for p, t in structures.values()]
    np.testing.assert_allclose(got, expected, **TOLERANCE)


def test_a_known_distance_in_mm():
    # One voxel each, 4 voxels apart along the 2.5 mm axis: every surface distance is 10 mm.
    a = np.zeros((5, 5, 9), bool)
    b = np.zeros_like(a)
    a[2, 2, 1], b[2, 2, 5] = True, True
    assert surface_scores(a, b, (1.0, 1.0, 2.5)) == {"hd95": pytest.approx(10.0), "msd": pytest.approx(10.0)}
    # A cube and the same cube: 0; a cube shifted by one voxel along the 3 mm axis: 3 mm.
    cube = np.zeros((12, 12, 12), bool)
    cube[3:8, 3:8, 3:8] = True
    assert surface_scores(cube, cube, SPACING) == {"hd95": 0.0, "msd": 0.0}
    assert hd95(np.roll(cube, 1, axis=2), cube, SPACING) == pytest.approx(3.0)


def test_brats_empty_mask_convention(monai_metrics):
    empty = np.zeros((48, 48, 31), bool)  # 5 mm voxels: the 240 x 240 x 155 mm of a BraTS scan
    blob = empty.copy()
    blob[20:25, 20:25, 10:14] = True
    spacing = (5.0, 5.0, 5.0)
    assert max_distance(empty.shape, spacing) == pytest.approx(373.13, abs=0.005)  # BraTS 2021's penalty
    assert surface_scores(empty, empty, spacing) == {"hd95": 0.0, "msd": 0.0}  # nothing to find, nothing found
    for pred, true in [(empty, blob), (blob, empty)]:  # missed, or found where there is none: the penalty
        scores = surface_scores(pred, true, spacing)
        assert scores["hd95"] == scores["msd"] == pytest.approx(373.128, abs=1e-3)
    # MONAI (1.6) instead gives nan (HD95; MSD with both empty) or inf (MSD, one empty): no mean over subjects.
    import warnings

    import torch

    def monai(metric, p, t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(metric(include_background=True)(torch.from_numpy(p[None, None].astype(np.float32)),
                                                         torch.from_numpy(t[None, None].astype(np.float32)),
                                                         spacing=spacing)[0, 0])

    import functools

    for metric in (functools.partial(monai_metrics.HausdorffDistanceMetric, percentile=95),
                   functools.partial(monai_metrics.SurfaceDistanceMetric, symmetric=True)):
        for pred, true in [(empty, empty), (empty, blob), (blob, empty)]:
            assert not np.isfinite(monai(metric, pred, true))


def test_bad_inputs_are_named():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ConfigError, match="shape"):
        hd95(a, np.zeros((4, 4, 5), bool), 1.0)
    with pytest.raises(ConfigError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))


def test_evaluate_segmentation_reports_surface_distances_per_region():
    true = np.zeros((10, 10, 10), np.uint8)
    true[2:6, 2:6, 2:6] = 2  # oedema only: WT present, TC and ET absent
    pred = np.roll(true, 1, axis=0)
    regions = M.brats_regions()
    result = M.evaluate_segmentation([pred, true], [true, true], 5, regions=regions,
                                     spacings=[(2.0, 1.0, 1.0), (1.0, 1.0, 1.0)])
    first, second = result["per_subject"]
    assert first["hd95"] == {"whole_tumor": pytest.approx(2.0), "tumor_core": 0.0, "enhancing_tumor": 0.0}
    assert second["hd95"]["whole_tumor"] == 0.0 and second["spacing"] == [1.0, 1.0, 1.0]
    assert result["hd95"]["whole_tumor"] == pytest.approx(1.0)  # mean over the two subjects
    assert result["mean_hd95"] == pytest.approx(1.0 / 3)
    assert set(result["msd"]) == set(regions) and result["mean_msd"] > 0
    # without spacings (in-memory arrays, no geometry) no surface distances are reported
    assert "hd95" not in M.evaluate_segmentation([pred], [true], 5, regions=regions)
    # other label sets: one entry per foreground class
    per_class = M.evaluate_segmentation([pred], [true], 3, class_names=["bg", "a", "b"], spacings=[(1, 1, 1)])
    assert set(per_class["hd95"]) == {"a", "b"} and per_class["hd95"]["a"] == 0.0
    with pytest.raises(ConfigError, match="spacings"):
        M.evaluate_segmentation([pred, pred], [true, true], 3, spacings=[(1, 1, 1)])


def test_grid_spacing_is_the_scan_extent_over_the_grid():
    info = {"id": "s1", "spacing": [1.0, 1.0, 5.0], "crop_bbox": [[0, 240], [0, 240], [0, 31]],
            "ras_shape": [240, 240, 31]}
    assert grid_spacing(info, (64, 64, 64)) == pytest.approx((3.75, 3.75, 155 / 64))
    cropped = {**info, "crop_bbox": [[10, 230], [0, 240], [0, 31]]}
    assert grid_spacing(cropped, (64, 64, 64))[0] == pytest.approx(220 / 64)
    with pytest.raises(DataError, match="no voxel spacing for subject 's2'"):
        grid_spacing({"id": "s2", "crop_bbox": info["crop_bbox"]}, (64, 64, 64))


class _Background:
    """A 'model' that finds nothing: every structure present in the truth is missed."""

    in_channels, num_classes = 1, 3

    def predict_on_batch(self, batch):
        out = np.zeros((*batch.shape[:4], 3), np.float32)
        out[..., 0] = 1.0
        return out


def test_evaluate_model_scores_in_mm_of_the_scan(tmp_path):
    from keras_ssl3d.data.synthetic import make_pancreas_like
    from keras_ssl3d.finetune.evaluation import evaluate_model, format_table
    from keras_ssl3d.data.labelled import load_task_data

    shape, spacing = (20, 16, 12), (0.8, 0.8, 2.5)
    make_pancreas_like(tmp_path / "msd", n=2, shape=shape, spacing=spacing)
    data = load_task_data(tmp_path / "msd", size=8, cache_root=tmp_path)
    metadata = {"task": "segmentation", "num_classes": 3, "input_size": [8, 8, 8],
                "class_names": ["background", "pancreas", "cancer"]}
    result = evaluate_model(_Background(), metadata, data)
    penalty = max_distance(shape, spacing)  # the scan's diagonal, whatever grid it is scored on
    for i, row in enumerate(result["per_subject"]):
        label = data.samples.label(i)
        assert row["spacing"] == pytest.approx([20 * 0.8 / 8, 16 * 0.8 / 8, 12 * 2.5 / 8])
        for k, name in [(1, "pancreas"), (2, "cancer")]:
            assert row["hd95"][name] == pytest.approx(penalty if (label == k).any() else 0.0)
    table = format_table(result)
    assert "HD95" in table and f"{result['hd95']['pancreas']:.2f}" in table
