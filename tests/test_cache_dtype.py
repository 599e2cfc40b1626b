"""The compact cache: intensities stored as float16, uint16 or uint8 (float32 by default), read back as float32 in
[0, 1]."""

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
    for dtype in ("float32", "float16", "uint16", "uint8"):
        preprocess_dataset(raw, root / dtype, size=SIZE, dtype=dtype)
        out[dtype] = root / dtype
    preprocess_dataset(raw, root / "default", size=SIZE)
    out["default"] = root / "default"
    return out


def _image_bytes(folder):
    return sum(p.stat().st_size for p in (folder / "images").glob("*.npy"))


def test_a_new_cache_is_float32_while_it_fits_in_memory_and_uint16_beyond(caches, tmp_path, monkeypatch):
    from keras_ssl3d.data import cache_dtype

    # 3 subjects x 16^3 x 4 channels x 4 bytes = 196,608 bytes as float32
    assert cache_dtype.auto_cache_dtype(3, (SIZE,) * 3, 4, memory_bytes=2 * 196_608)[0] == "float32"
    dtype, reason = cache_dtype.auto_cache_dtype(3, (SIZE,) * 3, 4, memory_bytes=2 * 196_608 - 1)
    assert dtype == "uint16" and "more than half of this machine's" in reason and "read from disk" in reason
    # the paper's corpus on a 24 GB machine: ~22k subjects at 128^3 x 2 channels
    assert cache_dtype.auto_cache_dtype(22_000, (128,) * 3, 2, memory_bytes=24e9)[0] == "uint16"
    # through preprocess (and the CLI's line): a machine with too little memory for this cache gets uint16
    monkeypatch.setattr(cache_dtype, "machine_memory", lambda: 300_000)
    summary = preprocess_dataset(caches["raw"], tmp_path / "small-machine", size=SIZE)
    assert summary["dtype"] == "uint16" and open_cache(tmp_path / "small-machine").dtype == "uint16"
    assert summary["dtype_reason"].startswith("0.0 GB as float32, more than half")
    # a rerun keeps the cache's own dtype, whatever the machine
    monkeypatch.setattr(cache_dtype, "machine_memory", lambda: 10 ** 12)
    summary = preprocess_dataset(caches["raw"], tmp_path / "small-machine", size=SIZE)
    assert (summary["dtype"], summary["dtype_reason"], summary["already_done"]) == ("uint16", "this cache's own", 3)


def test_default_is_float32_and_the_compact_ones_halve_and_quarter_the_bytes(caches):
    default = open_cache(caches["default"])
    assert default.dtype == "float32"
    assert json.loads((caches["default"] / "settings.json").read_text())["dtype"] == "float32"
    assert np.load(caches["default"] / default.info(0)["image"], mmap_mode="r").dtype == np.float32
    assert np.load(caches["float16"] / default.info(0)["image"], mmap_mode="r").dtype == np.float16
    data = SIZE ** 3 * 4  # voxels x channels per subject
    full, half, fixed, quarter = (_image_bytes(caches[d]) for d in ("float32", "float16", "uint16", "uint8"))
    assert full - 3 * 4 * data == half - 3 * 2 * data == fixed - 3 * 2 * data == quarter - 3 * data  # same headers
    assert half == fixed < 0.51 * full and quarter < 0.26 * full


@pytest.mark.parametrize("dtype,tolerance", [("float16", 2 ** -12), ("uint16", 0.5 / 65535 + 1e-7),
                                             ("uint8", 0.5 / 255 + 1e-7)])
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
    assert "intensities stored as uint8\n" in capsys.readouterr().out  # chosen: no reason given
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(tmp_path / "auto"), "--size", str(SIZE), "--quiet"]) == 0
    assert "intensities stored as float32 (0.0 GB as float32, within half of this machine's" in capsys.readouterr().out
    # Another dtype for a cache that holds subjects: refused in one line, nothing changed.
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(out), "--size", str(SIZE), "--dtype", "float32",
                         "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "other settings (dtype)" in err[0], err
    assert run_cli(cli, ["preprocess", str(caches["raw"]), str(tmp_path / "x"), "--dtype", "float64"]) == 2
    assert "float64" in capsys.readouterr().err and not (tmp_path / "x").exists()


# ------------------------------------------------ reading back: bit for bit what numpy's cast gives

def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_half_to_float32_matches_numpys_cast_for_every_bit_pattern():
    from keras_ssl3d.data.cache_dtype import _HALF_CHUNK, _subnormals_kept, half_to_float32

    assert _subnormals_kept()  # else every call below would take numpy's cast and prove nothing about the fast one
    every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    finite = every[:0x7C00]  # +0, subnormals, normals: the widened-bits path
    assert _same_bits(half_to_float32(finite, np.empty(finite.shape, np.float32)), finite.astype(np.float32))
    # -0, negatives, infinities, NaNs (payloads too): numpy's cast, chunk by chunk, next to widened chunks
    mixed = np.concatenate([np.resize(finite, _HALF_CHUNK), every, finite]).reshape(-1, 4)
    got = half_to_float32(mixed, np.full(mixed.shape, 7.0, np.float32))
    assert _same_bits(got, mixed.astype(np.float32))
    # not contiguous (a strided view): numpy's cast, the same values
    view = mixed[::3, 1:]
    assert _same_bits(half_to_float32(view, np.empty(view.shape, np.float32)), view.astype(np.float32))


def test_half_to_float32_where_subnormals_are_flushed_takes_numpys_cast(monkeypatch):
    from keras_ssl3d.data import cache_dtype

    monkeypatch.setattr(cache_dtype, "_subnormals_kept", lambda: False)
    small = np.arange(0x400, dtype=np.uint16).view(np.float16)  # zero and the subnormals
    assert _same_bits(cache_dtype.half_to_float32(small, np.empty(small.shape, np.float32)), small.astype(np.float32))


def test_from_cache_dtype_reads_uint8_and_float16_as_numpy_would():
    from keras_ssl3d.data.cache_dtype import from_cache_dtype

    grey = np.arange(256, dtype=np.uint8).reshape(4, 4, 4, 4)
    want = grey.astype(np.float32) * np.float32(1.0 / 255.0)
    assert _same_bits(from_cache_dtype(grey), want)
    out = np.empty(grey.shape, np.float32)
    assert from_cache_dtype(grey, out=out) is out and _same_bits(out, want)
    assert want[0, 0, 0, 0] == 0.0 and want[-1, -1, -1, -1] == 1.0
    half = np.linspace(0, 1, 4 ** 4, dtype=np.float32).astype(np.float16).reshape(4, 4, 4, 4)
    assert _same_bits(from_cache_dtype(half), half.astype(np.float32))
    low = np.empty(half.shape, np.float16)  # an out of another dtype gets the float32 values cast to it
    np.testing.assert_array_equal(from_cache_dtype(half, out=low), half)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
@pytest.mark.parametrize("size", [None, 12])
def test_batches_from_a_compact_cache_are_its_values_as_float32(caches, dtype, size):
    """Each batch slot is filled straight from the memory map: the stored values cast exactly, in batch order."""
    from keras_ssl3d.data.cache_dtype import from_cache_dtype

    compact, reference = open_cache(caches[dtype], size=size), open_cache(caches["float32"], size=size)
    got = VolumeBatches(compact, batch_size=2, shuffle=True, seed=3, indices=[2, 0, 1])
    ref = VolumeBatches(reference, batch_size=2, shuffle=True, seed=3, indices=[2, 0, 1])
    tolerance = 2 ** -12 if dtype == "float16" else 0.5 / 255 + 1e-7
    for b in range(len(got)):
        images, want = got[b][0], ref[b][0]
        assert images.dtype == np.float32 and images.shape == want.shape
        assert 0 < np.abs(images - want).max() <= tolerance * (1 if size is None else 1.01)
        if size is None:
            for slot, i in zip(images, got.batch_indices(b)):
                stored = np.load(caches[dtype] / compact.info(int(i))["image"])
                assert _same_bits(slot, from_cache_dtype(stored.copy()))


def test_a_cached_image_of_the_wrong_shape_is_one_line(caches, tmp_path):
    import shutil

    from keras_ssl3d.errors import DataError

    folder = tmp_path / "odd"
    shutil.copytree(caches["float16"], folder)
    cache = open_cache(folder)
    path = folder / cache.info(1)["image"]
    np.save(path, np.zeros((SIZE, SIZE, SIZE - 1, 4), np.float16))
    with pytest.raises(DataError) as e:
        VolumeBatches(cache, batch_size=3, shuffle=False)[0]
    text = str(e.value)
    assert "\n" not in text and str(path) in text and "(16, 16, 15, 4)" in text and "(16, 16, 16, 4)" in text, text
