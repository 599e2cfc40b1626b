"""`keras-ssl3d pretrain` end to end on a folder of small NIfTI volumes."""

import json

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli


@pytest.fixture()
def nifti_folder(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        volume = np.zeros((20, 20, 18), np.float32)
        volume[3:17, 4:16, 2:16] = rng.random((14, 12, 14)) + 0.5  # foreground to crop to
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"subject{i}.nii.gz"))
    return folder


def test_pretrain_writes_a_loadable_encoder(nifti_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--task", "rotation", "--dims", "3", "--data", str(nifti_folder), "--out", str(out),
            "--epochs", "2", "--batch-size", "2", "--size", "16", "--filters", "4,8", "--norm", "group",
            "--seed", "3"]
    assert run_cli(cli, args=args) == 0
    printed = capsys.readouterr().out
    assert "Saved the pretrained encoder" in printed and "1/1" in printed  # Keras progress bar
    meta = json.loads((out / "encoder" / "metadata.json").read_text())
    assert meta["task"] == "rotation"
    hp = meta["hyperparameters"]
    assert hp["learning_rate"] == 1e-3 and hp["epochs"] == 2 and hp["encoder"]["filters"] == [4, 8]
    assert meta["pretraining_data"]["num_samples"] == 3
    assert (out / "run.json").is_file() and (out / "history.csv").is_file()
    encoder = Encoder3D.from_pretrained(out / "encoder")
    assert encoder.filters == (4, 8) and encoder.norm == "group"
    features = encoder.predict(np.zeros((1, 128, 128, 128, 1), np.float32), verbose=0)
    assert features.shape == (1, 64, 64, 64, 8)

    # a finished run resumes to a no-op; continuing with more epochs trains on
    more = [a if a != "2" or i != args.index("--epochs") + 1 else "3" for i, a in enumerate(args)]
    assert run_cli(cli, args=[*more, "--resume"]) == 0
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3


def test_pretrain_streams_from_a_cache_and_validates_on_held_out_subjects(nifti_folder, tmp_path, capsys):
    cache = tmp_path / "my-cache"
    args = ["pretrain", "--task", "rotation", "--data", str(nifti_folder), "--epochs", "2", "--batch-size", "2",
            "--size", "16", "--filters", "4,8", "--val-fraction", "0.34", "--cache", str(cache), "--workers", "2"]
    assert run_cli(cli, args=[*args, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert f"Preprocessed 3 subjects of {nifti_folder} into the cache {cache}" in printed
    assert "on 2 samples (+ 1 held out for validation)" in printed
    assert json.loads((cache / "manifest.json").read_text())["crop_foreground"] is True  # the paper's pretraining crop
    header, *rows = (tmp_path / "a" / "history.csv").read_text().strip().splitlines()
    assert "val_accuracy" in header and "val_loss" in header and len(rows) == 2
    meta = json.loads((tmp_path / "a" / "encoder" / "metadata.json").read_text())
    assert meta["pretraining_data"]["num_samples"] == 2 and meta["pretraining_data"]["num_validation_samples"] == 1
    # A second run reuses the cache: nothing is preprocessed again.
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert run_cli(cli, args=[*args, "--out", str(tmp_path / "b"), "--epochs", "1"]) == 0
    assert f"Using the cache {cache} (3 subjects" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == stamps


def test_pretrain_errors_are_one_line(nifti_folder, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["pretrain", "--task", "jigsaw", "--data", str(nifti_folder), "--out", str(out), "--epochs", "1",
            "--filters", "4,8"]
    assert run_cli(cli, args=[*base, "--size", "8"]) == 2  # a 3x3x3 grid with jitter 3 does not fit 8^3
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "--size 8" in err and len(err.strip().splitlines()) == 1
    assert run_cli(cli, args=[*base, "--size", "16", "--filters", "4,x"]) == 2
    assert "--filters" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = run_cli(cli, args=["pretrain", "--task", "rotation", "--data", str(empty), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Error:") and "Traceback" not in err
