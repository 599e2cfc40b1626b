"""The compact cache: intensities stored as float16 or uint8 (float32 by default), read back as float32 in [0, 1]."""

import json

import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data import VolumeBatches, open_cache, preprocess_dataset
from keras_ssl3d.data.synthetic import make_brats_like

SIZE = 16


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtype")
    raw = make_brats_like(root / "raw", n_subjects=3, shape=(20, 20, 16), seed=0)
    out = {"raw": raw}
    for dtype in ("float32", "float16", "uint8"):
        preprocess_dataset(raw, root / dtype, size=SIZE, dtype=dtype)
        out[dtype] = root / dtype
    preprocess_dataset(raw, root / "default", size=SIZE)
    out["default"] = root / "default"
    return out


def _image_bytes(folder):
    return sum(p.stat().st_size for p in (folder / "images").glob("*.npy"))


def test_default_is_float32_and_the_compact_ones_halve_and_quarter_the_bytes(caches):
    default = open_cache(caches["default"])
    assert default.dtype == "float32"
    assert json.loads((caches["default"] / "settings.json").read_text())["dtype"] == "float32"
    assert np.load(caches["default"] / default.info(0)["image"], mmap_mode="r").dtype == np.float32
    assert np.load(caches["float16"] / default.info(0)["image"], mmap_mode="r").dtype == np.float16
    data = SIZE ** 3 * 4  # voxels x channels per subject
    full, half, quarter = (_image_bytes(caches[d]) for d in ("float32", "float16", "uint8"))
    assert full - 3 * 4 * data == half - 3 * 2 * data == quarter - 3 * data  # the same .npy headers
    assert half < 0.51 * full and quarter < 0.26 * full


@pytest.mark.parametrize("dtype,tolerance", [("float16", 2 ** -12), ("uint8", 0.5 / 255 + 1e-7)])
def test_read_back_as_float32_within_the_rounding(caches, dtype, tolerance):
    reference, compact = open_cache(caches["float32"]), open_cache(caches[dtype])
    assert compact.subject_ids == reference.subject_ids
    for i in range(len(reference)):
        got, want = compact.image(i), reference.image(i)
        assert got.dtype == np.float32 and got.shape == want.shape
        err = np.abs(got - want).max()
        assert 0 < err <= tolerance, err  # rounded (not equal), and no more than the rounding
        assert got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_array_equal(compact.label(i), reference.label(i))  # labels are never rounded


def test_batches_are_float32(caches):
    batches = VolumeBatches(open_cache(caches["uint8"]), batch_size=2, shuffle=False)
    images = batches[0][0] if isinstance(batches[0], tuple) else batches[0]
    assert np.asarray(images).dtype == np.float32


def test_an_older_float32_cache_resumes_and_keeps_its_dtype(caches, tmp_path):
    """A cache made before the choice existed (no dtype in its settings) stored float32: reruns reuse it."""
    old = tmp_path / "old"
    preprocess_dataset(caches["raw"], old, size=SIZE, dtype="float32")
    for name in ("settings.json", "manifest.json"):
        record = json.loads((old / name).read_text())
        del record["dtype"]
        (old / name).write_text(json.dumps(record))
    before = {p: p.stat().st_mtime_ns for p in (old / "images").glob("*.npy")}
    summary = preprocess_dataset(caches["raw"], old, size=SIZE)  # dtype not given: the cache's own
    assert summary["already_done"] == 3 and summary["done"] == 0
    assert {p: p.stat().st_mtime_ns for p in (old / "images").glob("*.npy")} == before
    assert open_cache(old).dtype == "float32"
    # and a float16 cache, rerun without --dtype, resumes as float16 (not the float32 default)
    summary = preprocess_dataset(caches["raw"], caches["float16"], size=SIZE)
    assert summary["already_done"] == 3 and open_cache(caches["float16"]).dtype == "float16"


def test_cli_dtype_option(caches, tmp_path, capsys):
    out = tmp_path / "u8"
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(out), "--size", str(SIZE), "--dtype", "uint8",
                         "--quiet"]) == 0
    assert open_cache(out).dtype == "uint8"
    capsys.readouterr()
    # Another dtype for a cache that holds subjects: refused in one line, nothing changed.
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(out), "--size", str(SIZE), "--dtype", "float32",
                         "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "other settings (dtype)" in err[0], err
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(tmp_path / "x"), "--dtype", "float64"]) == 2
    assert "float64" in capsys.readouterr().err and not (tmp_path / "x").exists()
