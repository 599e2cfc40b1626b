"""Issue 22, the data inputs: every bad or unusual input is either read right or refused in one line naming
the file, and nothing is dropped, mixed or altered without a word.

CLI cases run a real command in-process with `run_cli` (exit 2, one line, the file named, no traceback,
nothing left half-written); the rest test the function concerned.
"""

import errno
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
from test_cli_hardening import _leftovers, assets  # noqa: F401  (assets: the module fixture)
from test_data_errors import SHAPE, SID

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data import load_labeled_volumes, open_cache, preprocess_dataset
from keras_ssl3d.data.layouts import discover
from keras_ssl3d.data.nifti import load_volume, verify_gzip
from keras_ssl3d.data.preprocess import cache_name, preprocess_subject
from keras_ssl3d.errors import DataError, DataWarning
from keras_ssl3d.fileio import disk_full_reason
from keras_ssl3d.finetune import metrics as M
from keras_ssl3d.finetune.evaluation import resolve_inputs

BRATS_2023 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


@pytest.fixture
def data(assets, tmp_path):  # noqa: F811
    root = tmp_path / "data"
    shutil.copytree(assets / "clean", root)
    return root


def _file(root, role, sid=SID):
    return root / sid / f"{sid}_{role}.nii.gz"


def _one_line_error(argv, named, pattern, capsys, *roots):
    """Run a command; it must fail with exit 2 and one line naming ``named`` and matching ``pattern``."""
    capsys.readouterr()
    code = run_cli(cli, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, lines
    assert str(named) in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert _leftovers(*roots) == []
    print(lines[0])
    return lines[0]


def _preprocess(src, out, *extra):
    return [str(a) for a in ("preprocess", src, out, "--size", "8", "--quiet", *extra)]


def _to_2023(root, relabel=True):
    """Rename every subject's files to the BraTS 2023 names (``<id>-t1n.nii.gz``...), labels 4 -> 3."""
    for sdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for role, new in BRATS_2023.items():
            old = sdir / f"{sdir.name}_{role}.nii.gz"
            target = sdir / f"{sdir.name}-{new}.nii.gz"
            if role == "seg" and relabel:
                img = nib.load(str(old))
                lab = np.asarray(img.dataobj).copy()
                lab[lab == 4] = 3
                nib.save(nib.Nifti1Image(lab, img.affine), str(target))
                old.unlink()
            else:
                old.rename(target)
    return root


# ---------------------------------------------------------------- 3: cache names unique per subject


def test_ids_differing_in_replaced_characters_get_their_own_cache_files(data, tmp_path):
    names = ["Sub 1", "Sub_1", "患者1", "病人1"]
    sources = sorted(p for p in data.iterdir() if p.is_dir())
    shutil.copytree(sources[0], data / "extra")
    for name, sdir in zip(names, [*sources, data / "extra"]):
        for f in sdir.iterdir():
            f.rename(sdir / f.name.replace(sdir.name, "case"))
        sdir.rename(data / name)
    summary = preprocess_dataset(data, tmp_path / "cache", size=8)
    assert summary["done"] == 4
    cache = open_cache(tmp_path / "cache")
    assert sorted(cache.subject_ids) == sorted(names)
    files = [s["image"] for s in cache.subjects]
    assert len(set(files)) == 4 and len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 4
    by_id = {s["id"]: i for i, s in enumerate(cache.subjects)}
    # Each id reads back its own scan ("Sub 1" was made from the first source folder, "Sub_1" from the second).
    assert not np.array_equal(np.asarray(cache.image(by_id["Sub 1"])), np.asarray(cache.image(by_id["Sub_1"])))
    assert cache_name("Sub 1") != cache_name("Sub_1") and cache_name("患者1") != cache_name("病人1")
    assert cache_name("Sub 1").startswith("Sub_1-")


def test_two_subjects_with_one_id_name_both_paths(data, tmp_path):
    rows = ["id,t1,t1ce,t2,flair"]
    for sid in ("BraTS_Synth_001", "BraTS_Synth_002"):
        rows.append("same," + ",".join(f"{sid}/{sid}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")))
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"two subjects have the id 'same': .*BraTS_Synth_001.* and "
                                        r".*BraTS_Synth_002"):
        discover(data / "manifest.csv")


def test_an_old_cache_with_shared_files_is_refused(data, tmp_path):
    out = tmp_path / "cache"
    preprocess_dataset(data, out, size=8)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["subjects"][1]["image"] = manifest["subjects"][0]["image"]  # what "Sub 1" / "Sub_1" did before
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"share the file images/.*one overwrote the other"):
        open_cache(out)


def test_an_old_cache_is_not_resumed_into(data, tmp_path, capsys):
    out = tmp_path / "cache"
    assert run_cli(cli, _preprocess(data, out)) == 0
    settings = json.loads((out / "settings.json").read_text())
    del settings["cache_version"], settings["label_convention"]  # as version 1 wrote it
    (out / "settings.json").write_text(json.dumps(settings))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    _one_line_error(_preprocess(data, out), out, r"made by an older keras-ssl3d .*new output folder", capsys, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# ---------------------------------------------------------------- 4: bare names, folders not taken


def test_bare_brats_file_names_are_a_subject(data, tmp_path, capsys):
    bare = data / "case_bare"
    shutil.copytree(data / SID, bare)
    for f in bare.iterdir():
        f.rename(bare / f.name.replace(f"{SID}_", ""))  # t1.nii.gz, t1ce.nii.gz, ..., seg.nii.gz
    assert run_cli(cli, _preprocess(data, tmp_path / "cache")) == 0
    assert "4 subjects preprocessed, 0 already done, 0 skipped as bad, of 4" in capsys.readouterr().out
    cache = open_cache(tmp_path / "cache")
    assert "case_bare" in cache.subject_ids and all(s.get("label") for s in cache.subjects)


def test_every_folder_not_taken_as_a_subject_is_reported(data, tmp_path):
    (data / "notes").mkdir()
    (data / "notes" / "readme.txt").write_text("x")
    odd = data / "odd_names"
    shutil.copytree(data / SID, odd)
    for i, f in enumerate(sorted(odd.iterdir())):
        f.rename(odd / f"scan{i}.nii.gz")
    with pytest.warns(DataWarning) as caught:
        ds = discover(data)
    text = "\n".join(str(w.message) for w in caught)
    assert f"{data / 'notes'}: not taken as a subject: it holds no NIfTI files" in text
    assert re.search(rf"{re.escape(str(odd))}: not taken as a subject: none of its NIfTI files \(scan0.nii.gz", text)
    assert len(ds.subjects) == 3


def test_folder_layout_reports_sub_folders_it_does_not_read(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    nib.save(img, str(root / "a.nii.gz"))
    (root / "more").mkdir()
    nib.save(img, str(root / "more" / "b.nii.gz"))
    with pytest.warns(DataWarning, match=r"more: not taken as a subject: the folder layout reads"):
        discover(root)


# ---------------------------------------------------------------- 5: the whole gzip stream is checked


def _flip_crc(path):
    raw = bytearray(path.read_bytes())
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # the CRC32 of the trailer
    path.write_bytes(bytes(raw))
    return path


def test_a_gzip_crc_failure_is_one_line(data, tmp_path, capsys):
    bad = _flip_crc(_file(data, "t2"))
    _one_line_error(_preprocess(data, tmp_path / "cache"), bad, r"corrupt gzip file \(CRC check failed", capsys,
                    tmp_path)
    assert not list((tmp_path / "cache").rglob(f"{cache_name(SID)}*"))  # nothing cached for the damaged subject


def test_sixteen_flipped_bytes_are_refused(data, tmp_path):
    path = _file(data, "flair")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 16] = bytes(b ^ 0x5A for b in raw[middle:middle + 16])
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: corrupt"):
        load_volume(path)


def test_a_gzip_stream_longer_than_its_header_is_refused(data):
    path = _file(data, "t1")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw + bytes(3 << 20)))
    with pytest.raises(DataError, match=r"gzip stream expands beyond the .* its header declares"):
        load_volume(path)
    verify_gzip(_file(data, "t2"))  # a sound file passes


# ---------------------------------------------------------------- 6: complex and RGB voxels


def _save_like(path, array):
    nib.save(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
    return path


def test_complex_voxels_are_one_line(data, tmp_path, capsys):
    bad = _save_like(_file(data, "t1ce"), (np.ones(SHAPE) * (1 + 2j)).astype(np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        _one_line_error(_preprocess(data, tmp_path / "cache"), bad, r"complex-valued voxels \(complex64\)", capsys,
                        tmp_path)


def _rgb(shape):
    a = np.zeros(shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    a["R"] = 7
    return a


def test_rgb_voxels_name_their_own_file_in_preprocess(data, tmp_path, capsys):
    bad = _save_like(_file(data, "t2"), _rgb(SHAPE))  # the third modality, not the first
    _one_line_error(_preprocess(data, tmp_path / "cache"), bad, r"RGB/structured voxels \(R, G, B\)", capsys,
                    tmp_path)


def test_rgb_voxels_in_predict(assets, tmp_path, capsys):  # noqa: F811
    bad = _save_like(tmp_path / "rgb.nii.gz", _rgb((8, 8, 8)))
    _one_line_error(["predict", "--model", assets / "model", bad, "--out", tmp_path / "out"], bad,
                    r"RGB/structured voxels", capsys, tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- 9: BraTS 2023 / 2024


def test_brats_2023_names_and_labels_are_read(data, tmp_path, capsys):
    _to_2023(data)
    assert run_cli(cli, _preprocess(data, tmp_path / "cache")) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["label_convention"] == "brats2023"
    assert manifest["label_mapping"] == {"0": 0, "1": 1, "2": 2, "3": 3}
    assert manifest["label_names"]["3"] == "enhancing tumor" and manifest["num_classes"] == 4
    cache = open_cache(tmp_path / "cache")
    assert cache.modalities == ["t1", "t1ce", "t2", "flair"]
    assert 3 in np.unique(cache.labels())


def test_brats_2021_names_with_2023_labels_need_the_option(data, tmp_path, capsys):
    seg = _file(data, "seg")
    img = nib.load(str(seg))
    lab = np.asarray(img.dataobj).copy()
    lab[lab == 4] = 3
    nib.save(nib.Nifti1Image(lab, img.affine), str(seg))
    _one_line_error(_preprocess(data, tmp_path / "cache"), seg,
                    r"unexpected label values \[3\] \(expected 0, 1, 2, 4\); .*--label-convention brats2023", capsys,
                    tmp_path)
    for sdir in data.iterdir():  # make every subject 2023-labelled, names unchanged
        s = sdir / f"{sdir.name}_seg.nii.gz"
        img = nib.load(str(s))
        lab = np.asarray(img.dataobj).copy()
        lab[lab == 4] = 3
        nib.save(nib.Nifti1Image(lab, img.affine), str(s))
    # (the first run's cache holds a subject made with the 2021 labels: it is refused, so a new folder)
    assert run_cli(cli, _preprocess(data, tmp_path / "c23", "--label-convention", "brats2023")) == 0
    assert json.loads((tmp_path / "c23" / "manifest.json").read_text())["label_convention"] == "brats2023"


def test_mixed_brats_releases_are_refused_unless_told(data):
    _to_2023(data)
    sdir = data / SID
    for role, new in BRATS_2023.items():
        (sdir / f"{SID}-{new}.nii.gz").rename(sdir / f"{SID}_{role}.nii.gz")
    with pytest.raises(DataError, match=r"mixes BraTS 2021 file names .* and BraTS 2023 names"):
        discover(data)
    assert discover(data, label_convention="brats2023").extra["label_convention"] == "brats2023"


def test_brats_regions_for_both_conventions():
    assert M.brats_regions({0: 0, 1: 1, 2: 2, 4: 3}) == {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3),
                                                           "enhancing_tumor": (3,)}
    regions_2023 = M.brats_regions({0: 0, 1: 1, 2: 2, 3: 3})
    assert regions_2023 == {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing_tumor": (3,)}
    names_2023 = ["background", "non-enhancing tumor core", "surrounding FLAIR hyperintensity (edema)",
                  "enhancing tumor"]
    assert M.is_brats_labels({0: 0, 1: 1, 2: 2, 3: 3}, names_2023)
    assert not M.is_brats_labels({0: 0, 1: 1, 2: 2, 3: 3}, ["background", "liver", "tumour", "vessel"])
    # One 2023 label map against a prediction that misses the enhancing voxels: ET 0, TC 2/3, WT 4/5 (by hand).
    true = np.array([0, 1, 2, 3, 3])
    pred = np.array([0, 1, 2, 1, 0])
    dice = M.region_dice(pred, true, regions_2023)
    assert dice["enhancing_tumor"] == 0.0
    assert dice["tumor_core"] == pytest.approx(2 * 2 / (2 + 3))
    assert dice["whole_tumor"] == pytest.approx(2 * 3 / (3 + 4))


def test_predict_reads_2023_named_and_bare_subject_folders(data, assets, tmp_path, capsys):  # noqa: F811
    _to_2023(data)
    folder = data / SID
    items = resolve_inputs([folder], ["t1", "t1ce", "t2", "flair"])
    assert [p.name for p in items[0][1]] == [f"{SID}-{n}.nii.gz" for n in ("t1n", "t1c", "t2w", "t2f")]
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    for f in bare.iterdir():
        f.rename(bare / f.name.replace(f"{SID}-", ""))
    assert [p.name for p in resolve_inputs([bare], ["t1", "t1ce", "t2", "flair"])[0][1]] == [
        "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz", "t2f.nii.gz"]
    out = tmp_path / "preds"
    assert run_cli(cli, ["predict", "--model", str(assets / "model"), str(folder), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert len(list(out.glob(f"{SID}*.nii.gz"))) == 1


# ---------------------------------------------------------------- 12: headers, bombs, links, CSV, spacing


def _claiming(path, shape, suffix=".nii.gz"):
    """A file whose header claims ``shape`` but holds a few hundred bytes of voxels."""
    header = nib.load(str(path)).header.copy()
    header.set_data_shape(shape)
    raw = header.binaryblock + bytes(4) + bytes(400)
    path.unlink()
    target = path.with_name(path.name.replace(".nii.gz", suffix))
    target.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    return target


def test_a_header_claiming_more_than_the_file_holds_is_corrupt(data, tmp_path, capsys):
    bad = _claiming(_file(data, "t2"), (32767, 32767, 32767))
    assert bad.stat().st_size < 3000
    _one_line_error(_preprocess(data, tmp_path / "cache"), bad,
                    r"corrupt: its header declares 32767x32767x32767 voxels of int16 \(70\.4 TB\) but the file \(\d+ "
                    r"bytes\) cannot hold them \(header size inconsistent with file size\)", capsys, tmp_path)


def test_an_uncompressed_header_claiming_too_much_is_corrupt(data):
    bad = _claiming(_file(data, "t1"), (64, 64, 64), suffix=".nii")
    with pytest.raises(DataError, match=r"corrupt: its header declares 64x64x64 voxels .*header size inconsistent"):
        load_volume(bad)


def test_a_scan_over_the_size_cap_is_refused_before_decompressing(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_SSL3D_MAX_SCAN_GB", "0.000002")  # 2 kB: every synthetic scan is larger
    bad = _file(data, "t1", sid="BraTS_Synth_001")
    _one_line_error(_preprocess(data, tmp_path / "cache"), bad,
                    r"refused: its header declares 12x12x10 voxels of int16 .*over the 2e-06 GB limit .*"
                    r"decompression bomb", capsys, tmp_path)


def test_a_symlink_loop_is_named_as_such(data, tmp_path, capsys):
    p = _file(data, "t2")
    p.unlink()
    other = p.with_name("loop_partner.nii.gz")
    p.symlink_to(other)
    other.symlink_to(p)
    _one_line_error(_preprocess(data, tmp_path / "cache"), p, r"symbolic link loop", capsys, tmp_path)


def _manifest_rows(data, sids=("BraTS_Synth_001", "BraTS_Synth_002", "BraTS_Synth_003")):
    return [[sid, *(f"{sid}/{sid}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg"))] for sid in sids]


def test_a_semicolon_csv_manifest_is_read(data, tmp_path, capsys):
    lines = ["id;t1;t1ce;t2;flair;seg"] + [";".join(r) for r in _manifest_rows(data)]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    assert run_cli(cli, _preprocess(data / "manifest.csv", tmp_path / "cache")) == 0, capsys.readouterr().err
    cache = open_cache(tmp_path / "cache")
    assert cache.subject_ids == ["BraTS_Synth_001", "BraTS_Synth_002", "BraTS_Synth_003"]
    assert cache.modalities == ["t1", "t1ce", "t2", "flair"] and all(s.get("label") for s in cache.subjects)


def test_extra_csv_columns_are_named_not_read(data):
    lines = ["eid,age,t1,t1ce,t2,flair,sex,seg"]
    lines += [",".join([r[0], "63", *r[1:5], "F", r[5]]) for r in _manifest_rows(data)]
    (data / "ukb.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(DataWarning, match=r"ukb.csv: columns age, sex are not read"):
        ds = discover(data / "ukb.csv")
    assert ds.modalities == ["t1", "t1ce", "t2", "flair"] and [s.id for s in ds.subjects][0] == "BraTS_Synth_001"
    assert all(s.label is not None for s in ds.subjects)


def test_unlabelled_rows_are_said_to_be_left_out(data, tmp_path):
    rows = _manifest_rows(data)
    rows[1][5] = ""  # no label for the second subject
    (data / "m.csv").write_text("\n".join(["id,t1,t1ce,t2,flair,seg"] + [",".join(r) for r in rows]) + "\n")
    preprocess_dataset(data / "m.csv", tmp_path / "cache", size=8)
    with pytest.warns(DataWarning, match=r"1 subject\(s\) without a label file are left out .*\(BraTS_Synth_002\)"):
        cache = open_cache(tmp_path / "cache", labeled_only=True)
    assert cache.subject_ids == ["BraTS_Synth_001", "BraTS_Synth_003"]
    with pytest.warns(DataWarning, match=r"left out .*BraTS_Synth_002"):
        load_labeled_volumes(data / "m.csv", size=8)


def test_paths_outside_the_data_folder_are_said(data, tmp_path):
    inner = data / "lists"
    inner.mkdir()
    rows = [[r[0], *("../" + p for p in r[1:])] for r in _manifest_rows(data)]
    (inner / "m.csv").write_text("\n".join(["id,t1,t1ce,t2,flair,seg"] + [",".join(r) for r in rows]) + "\n")
    with pytest.warns(DataWarning, match=r"m.csv: 15 path\(s\) lead outside the data folder .* \(e.g. line 2: "
                                         r".*\.\./BraTS_Synth_001/BraTS_Synth_001_t1.nii.gz\); they are read as given"):
        ds = discover(inner / "m.csv")
    assert len(ds.subjects) == 3


def test_anisotropic_voxels_are_said(data):
    sdir = data / SID
    for f in sdir.iterdir():
        img = nib.load(str(f))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([-1.0, -1.0, 5.0, 1.0])), str(f))
    subject = next(s for s in discover(data).subjects if s.id == SID)
    with pytest.warns(DataWarning, match=r"_t1.nii.gz: anisotropic voxels of 1 x 1 x 5 mm \(ratio 5\.0\)"):
        preprocess_subject(subject, size=8, label_mapping={0: 0, 1: 1, 2: 2, 4: 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # isotropic scans: nothing to say
        preprocess_subject(next(s for s in discover(data).subjects if s.id != SID), size=8,
                           label_mapping={0: 0, 1: 1, 2: 2, 4: 3})


# ---------------------------------------------------------------- a full disk while preprocessing


@pytest.mark.parametrize("error,words", [
    (OSError(errno.ENOSPC, "No space left on device"), r"the disk is full \(No space left on device\)"),
    (OSError("131072 requested and 118752 written"), r"the disk is full \(only 118752 of 131072 bytes could be written\)"),
])
def test_a_full_disk_in_preprocess_is_one_line_and_resumes(data, tmp_path, capsys, monkeypatch, error, words):
    out = tmp_path / "cache"
    real_save = np.save
    calls = []

    def save(path, array, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the second subject's image: the first subject is complete
            with open(path, "wb") as f:
                f.write(b"partial")
            raise error
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    failed = out / "images" / f"{cache_name('BraTS_Synth_002')}.npy"
    _one_line_error(_preprocess(data, out), failed, words + r"; free some space and rerun", capsys, tmp_path)
    assert not failed.exists()
    monkeypatch.setattr(np, "save", real_save)  # space is back
    assert run_cli(cli, _preprocess(data, out)) == 0
    assert "2 subjects preprocessed, 1 already done" in capsys.readouterr().out
    assert len(open_cache(out)) == 3 and _leftovers(tmp_path) == []


def test_a_file_size_limit_in_a_subprocess(data, tmp_path):
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "keras_ssl3d.cli.main", "preprocess", str(data), str(out), "--size", "24", "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # 24^3 x 4 channels of float32 is 221 kB per image; a 100 kB limit stops the first image (Python ignores
    # SIGXFSZ, so the write fails with EFBIG instead of killing the process).
    proc = subprocess.run(["bash", "-c", 'ulimit -f 100; exec "$@"', "bash", *cmd], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("Error", "Traceback"))]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and re.search(r"images/BraTS_Synth_001-\w+\.npy: the disk is full", lines[0]), proc.stderr
    assert _leftovers(tmp_path) == []
    summary = preprocess_dataset(data, out, size=24)  # the limit is gone: the same command completes
    assert summary["done"] == 3 and len(open_cache(out)) == 3


def test_disk_full_reason_knows_other_errors():
    assert disk_full_reason(OSError(errno.EFBIG, "File too large")).startswith("the disk is full for a file this size (File too large")
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None


def test_brats_2023_fine_tuned_and_evaluated_with_its_regions(data, tmp_path, capsys):
    _to_2023(data)
    run = tmp_path / "ft"
    argv = ["finetune", "--data", str(data), "--encoder", "none", "--out", str(run), "--size", "8", "--filters",
            "4,8", "--epochs", "1", "--batch-size", "1", "--verbose", "0"]
    assert run_cli(cli, argv) == 0, capsys.readouterr().err
    metadata = json.loads((run / "model" / "metadata.json").read_text())
    assert {int(k): v for k, v in metadata["label_mapping"].items()} == {0: 0, 1: 1, 2: 2, 3: 3}
    scores = tmp_path / "scores.json"
    assert run_cli(cli, ["evaluate", "--model", str(run), "--data", str(data), "--out", str(scores)]) == 0
    regions = json.loads(scores.read_text())["regions"]
    assert sorted(regions) == ["enhancing_tumor", "tumor_core", "whole_tumor"]
    assert all(0.0 <= v <= 1.0 for v in regions.values())
