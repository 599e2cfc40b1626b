"""Every bad input, through the CLI: exit status 2, ONE line naming the file and the problem, no traceback,
and nothing half-written.

Each case breaks a copy of a tiny clean data set (or a preset / a model / the output path) and runs one
real command in-process with `run_cli` (one Keras import for the whole table); one case also runs the
installed `keras-ssl3d` executable in a subprocess.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_data_errors import (
    SHAPE,
    SID,
    affine_mismatch,
    all_zero,
    broken_symlink,
    corrupt_gzip,
    duplicate_nii,
    four_d_modality,
    label_shape_mismatch,
    lone_modality,
    missing_modality,
    nan_voxels,
    not_nifti,
    shape_mismatch,
    two_d,
    unexpected_labels,
    zero_affine,
    zero_bytes,
)

from keras_ssl3d import Encoder3D, Segmenter3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data.nifti import save_volume
from keras_ssl3d.data.synthetic import BRATS_AFFINE, make_brats_like

FILTERS = "4,8"
LABEL_META = {"task": "segmentation", "input_size": [8, 8, 8], "channel_names": ["t1", "t1ce", "t2", "flair"],
              "num_classes": 4, "class_names": ["background", "necrotic", "edema", "enhancing"],
              "label_mapping": {"0": 0, "1": 1, "2": 2, "4": 3}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    data = make_brats_like(root / "clean", n_subjects=3, shape=SHAPE, seed=0)
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=4, filters=(4, 8))
    encoder.save_pretrained(root / "encoder")
    seg = Segmenter3D(Encoder3D(in_channels=4, filters=(4, 8), channel_names=LABEL_META["channel_names"]),
                      num_classes=4)
    seg.save_pretrained(root / "model", metadata=LABEL_META)
    save_volume(np.random.default_rng(0).random(SHAPE).astype(np.float32) + 0.1, BRATS_AFFINE,
                root / "one_channel.nii.gz")
    (root / "a_file").write_text("a regular file, not a folder\n")
    encoder.save_pretrained(root / "pretrain_run" / "encoder", metadata={"task": "rotation"})  # what pretrain writes
    return root


@dataclasses.dataclass
class Ctx:
    """What a case may use: a fresh copy of the clean data, the shared assets, a scratch folder."""

    data: Path
    assets: Path
    tmp: Path
    out: Path

    def copy_asset(self, name):
        target = self.tmp / name
        shutil.copytree(self.assets / name, target)
        return target


def _finetune(ctx, encoder="none"):
    return ["finetune", "--data", str(ctx.data), "--encoder", str(encoder), "--out", str(ctx.out), "--size", "8",
            "--filters", FILTERS, "--epochs", "1", "--batch-size", "1", "--verbose", "0"]


def _pretrain(ctx, out=None):
    return ["pretrain", "--task", "rotation", "--data", str(ctx.data), "--out", str(out or ctx.out), "--size", "8",
            "--filters", FILTERS, "--epochs", "1", "--batch-size", "2"]


# -- the cases: each returns (argv, the file the message must name, extra environment) -------------------
def data_case(breaker, command):
    def case(ctx):
        bad = breaker(ctx.data)
        return (_finetune(ctx) if command == "finetune" else _pretrain(ctx)), bad, {}

    case.__name__ = f"{breaker.__name__}[{command}]"
    return case


def two_d_predict(ctx):
    bad = ctx.tmp / "slice.nii.gz"
    save_volume(np.ones((10, 10), np.float32), np.eye(4), bad)
    return ["predict", "--model", str(ctx.assets / "model"), str(bad), "--out", str(ctx.out)], bad, {}


def wrong_channel_count(ctx):
    bad = ctx.assets / "one_channel.nii.gz"
    return ["predict", "--model", str(ctx.assets / "model"), str(bad), "--out", str(ctx.out)], bad, {}


def wrong_channel_count_evaluate(ctx):
    # A 4-channel model evaluated on single-channel labelled data (a folder layout with one modality).
    folder = ctx.tmp / "single"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    shutil.copy(ctx.data / SID / f"{SID}_flair.nii.gz", folder / "images" / "case1.nii.gz")
    shutil.copy(ctx.data / SID / f"{SID}_seg.nii.gz", folder / "labels" / "case1.nii.gz")
    return ["evaluate", "--model", str(ctx.assets / "model"), "--data", str(folder), "--out",
            str(ctx.out / "scores.json")], folder, {}


def truncated_weights(ctx):
    preset = ctx.copy_asset("encoder")
    weights = preset / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:600])
    meta = json.loads((preset / "metadata.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # hash fine, file truncated
    (preset / "metadata.json").write_text(json.dumps(meta))
    return _finetune(ctx, preset), weights, {}


def sha256_mismatch(ctx):
    preset = ctx.copy_asset("encoder")
    weights = preset / "model.weights.h5"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(raw))
    return _finetune(ctx, preset), weights, {}


def handle_escape(ctx):
    handle = "org/../../etc/passwd"
    return ["export", handle, str(ctx.out)], handle, {}


def hub_handle_escape(ctx):
    handle = "hf://../secrets"
    return _finetune(ctx, handle), handle, {}


def unknown_preset(ctx):
    handle = "brats-cpcc"
    return ["export", handle, str(ctx.out)], handle, {}


def offline_not_cached(ctx):
    handle = "hf://someorg/never-downloaded"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(ctx.tmp / "empty-hf-cache")}
    return _finetune(ctx, handle), "someorg/never-downloaded", env


def config_file_case(command, text):
    def case(ctx):
        bad = ctx.tmp / "settings.yaml"
        bad.write_text(text)
        return [*(_finetune(ctx) if command == "finetune" else _pretrain(ctx)), "--config", str(bad)], bad, {}

    case.__name__ = f"config_file[{command}]"
    return case


def out_not_writable_pretrain(ctx):
    out = ctx.assets / "a_file" / "run"
    return _pretrain(ctx, out=out), out, {}


def out_not_writable_predict(ctx):
    out = ctx.assets / "a_file" / "out"
    return (["predict", "--model", str(ctx.assets / "model"), str(ctx.data / SID), "--out", str(out)],
            ctx.assets / "a_file", {})


def out_not_writable_demo(ctx):
    out = ctx.assets / "a_file"
    return ["demo", "--out", str(out)], out, {}


def four_d_modality_predict(ctx):
    bad = four_d_modality(ctx.data)  # the flair file of a subject folder, named (not the t1)
    return ["predict", "--model", str(ctx.assets / "model"), str(ctx.data / SID), "--out", str(ctx.out)], bad, {}


def zero_affine_predict(ctx):
    bad = zero_affine(ctx.data)
    return ["predict", "--model", str(ctx.assets / "model"), str(bad), "--out", str(ctx.out)], bad, {}


def zero_affine_preprocess(ctx):
    # The bad subject comes first, so the failure is before any subject is cached: then the cache folder
    # (settings.json included) must not be left behind to refuse a rerun with other settings.
    shutil.rmtree(ctx.data / "BraTS_Synth_001")
    bad = zero_affine(ctx.data)
    return ["preprocess", str(ctx.data), str(ctx.out), "--size", "8", "--quiet"], bad, {}


def numeric_option(command, option, value):
    def case(ctx):
        argv = _finetune(ctx) if command == "finetune" else _pretrain(ctx)
        i = argv.index(option) if option in argv else None
        argv = argv[:i] + argv[i + 2:] if i is not None else argv
        return [*argv, option, value], f"'{option}'", {}

    case.__name__ = f"{command}{option}={value}"
    return case


def evaluate_pretrain_run(ctx):
    run = ctx.assets / "pretrain_run"
    return ["evaluate", "--model", str(run), "--data", str(ctx.data), "--out", str(ctx.out / "scores.json")], run, {}


def encoder_is_a_plain_file(ctx):
    return _finetune(ctx, ctx.assets / "a_file"), ctx.assets / "a_file", {}


def study_same_names(ctx):
    enc = ctx.assets / "encoder"
    return (["study", "--data", str(ctx.data), "--encoders", f"a={enc},a={enc}", "--out", str(ctx.out), "--size",
             "8", "--filters", FILTERS, "--epochs", "1"], "'a', 'a'", {})


CASES = [
    (data_case(corrupt_gzip, "finetune"), r"corrupt or truncated"),
    (data_case(corrupt_gzip, "pretrain"), r"corrupt or truncated"),
    (data_case(not_nifti, "pretrain"), r"not a NIfTI file"),
    (data_case(missing_modality, "finetune"), r"missing modality t2"),
    (data_case(shape_mismatch, "pretrain"), r"shape \(12, 12, 9\) differs from \(12, 12, 10\)"),
    (data_case(affine_mismatch, "finetune"), r"affine differs"),
    (data_case(label_shape_mismatch, "finetune"), r"label shape \(12, 12, 8\) does not match image shape"),
    (data_case(nan_voxels, "pretrain"), r"contains 2 NaN/Inf voxels"),
    (data_case(nan_voxels, "finetune"), r"contains 2 NaN/Inf voxels"),
    (data_case(all_zero, "finetune"), r"all zeros"),
    (data_case(two_d, "pretrain"), r"2D image \(shape \(12, 12\)\), expected a 3D volume"),
    (two_d_predict, r"2D image \(shape \(10, 10\)\), expected a 3D volume"),
    (data_case(unexpected_labels, "finetune"), r"unexpected label values \[3\] \(expected 0, 1, 2, 4\)"),
    (wrong_channel_count, r"has 1 channel\(s\), the model expects 4"),
    (wrong_channel_count_evaluate, r"1 channels.*the model expects 4"),
    (truncated_weights, r"cannot load weights"),
    (sha256_mismatch, r"weights sha256 [0-9a-f]{12}\.\.\. does not match the preset metadata"),
    (handle_escape, r"invalid preset handle.*'\.\.'"),
    (hub_handle_escape, r"invalid preset handle.*'\.\.'"),
    (unknown_preset, r"unknown preset 'brats-cpcc': did you mean 'brats-cpc'"),
    (offline_not_cached, r"not in the local cache .*HF_HUB_OFFLINE=1"),
    (out_not_writable_pretrain, r"cannot create the run directory \(Not a directory\)"),
    (out_not_writable_predict, r"Not a directory"),
    (out_not_writable_demo, r"exists and is not a folder"),
    # issue 16
    (data_case(four_d_modality, "finetune"), r"has 5 volumes along its 4th axis .*one modality must be 3D"),
    (data_case(four_d_modality, "pretrain"), r"has 5 volumes along its 4th axis"),
    (four_d_modality_predict, r"has 5 volumes along its 4th axis"),
    (data_case(duplicate_nii, "finetune"), r"two files for flair: .*_flair.nii and .*_flair.nii.gz"),
    (data_case(duplicate_nii, "pretrain"), r"two files for flair"),
    (data_case(lone_modality, "finetune"), r"missing modality t1, t1ce, t2"),
    (data_case(broken_symlink, "finetune"), r"broken symbolic link \(its target .* does not exist\)"),
    (data_case(zero_bytes, "pretrain"), r"empty file \(0 bytes\)"),
    (data_case(zero_affine, "finetune"), r"affine \(sform/qform\) is all zeros"),
    (zero_affine_predict, r"affine \(sform/qform\) is all zeros"),
    (zero_affine_preprocess, r"affine \(sform/qform\) is all zeros"),
    (numeric_option("finetune", "--size", "0"), r"0 is not in the range 8<=x<=1024"),
    (numeric_option("finetune", "--size", "-5"), r"-5 is not in the range 8<=x<=1024"),
    (numeric_option("pretrain", "--size", "4"), r"4 is not in the range 8<=x<=1024"),
    (numeric_option("finetune", "--lr", "0"), r"0 is not in the range 0<x<=1"),
    (numeric_option("pretrain", "--seed", "-1"), r"-1 is not in the range"),
    (evaluate_pretrain_run, r"this is a pretraining run \(it holds encoder/\), not a fine-tuned model"),
    (encoder_is_a_plain_file, r"is a file, not a preset folder"),
    (study_same_names, r"encoders must have distinct names.*--encoders NAME=PATH"),
    # issue 15
    (config_file_case("finetune", "epoch: 3\n"), r"unknown option 'epoch' for `finetune`"),
    (config_file_case("pretrain", "task: [rotation\n"), r"not a valid YAML file"),
]


def _leftovers(*roots):
    """Temporary or partial files left anywhere under ``roots``."""
    found = []
    for root in roots:
        if Path(root).exists():
            found += [str(p) for p in Path(root).rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    return found


def _outputs(out):
    """Files a command would have written under ``out`` (data caches and run folders included)."""
    if not Path(out).exists():
        return []
    return sorted(str(p) for p in Path(out).rglob("*") if p.is_file())


@pytest.mark.parametrize("make_case,message", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_through_the_cli(make_case, message, assets, tmp_path, monkeypatch, capsys):
    ctx = Ctx(data=tmp_path / "data", assets=assets, tmp=tmp_path, out=tmp_path / "out")
    shutil.copytree(assets / "clean", ctx.data)
    argv, named, env = make_case(ctx)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = run_cli(cli, argv)  # anything but a user error would raise here, with its traceback
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and "Traceback" not in captured.err
    assert str(named) in lines[0], lines[0]
    assert re.search(message, lines[0]), lines[0]
    print(lines[0])
    assert _outputs(ctx.out) == []
    assert _leftovers(tmp_path, assets) == []


def test_full_disk_while_writing_a_checkpoint(assets, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(assets / "clean", data)
    out = tmp_path / "run"
    full = {"calls": 0}

    def no_space(path, data, shown):  # checkpoints are written with plain file writes (h5py composes in memory)
        full["calls"] += 1
        raise OSError(28, "No space left on device", str(shown))

    from keras_ssl3d.training import checkpoint

    monkeypatch.setattr(checkpoint, "_write_bytes", no_space)
    code = run_cli(cli, ["pretrain", "--task", "rotation", "--data", str(data), "--out", str(out), "--size", "8",
                         "--filters", FILTERS, "--epochs", "2", "--batch-size", "2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and full["calls"] == 1
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "model.weights.h5" in lines[0] and "No space left on device" in lines[0], lines[0]
    assert "no checkpoint was saved yet" in lines[0]
    # Nothing half-written: no checkpoint folder (complete or partial), no encoder, no temporary files.
    assert not (out / "encoder").exists()
    assert not any((out / "checkpoints").glob("epoch-*")) if (out / "checkpoints").exists() else True
    assert _leftovers(out) == []


def test_installed_executable_prints_one_line(assets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(assets / "clean", data)
    bad = corrupt_gzip(data)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    exe = shutil.which("keras-ssl3d") or None
    argv = [exe] if exe else [sys.executable, "-m", "keras_ssl3d.cli.main"]
    proc = subprocess.run([*argv, "pretrain", "--task", "rotation", "--data", str(data), "--out",
                           str(tmp_path / "run"), "--size", "8"], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if not _native_log(line)]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"Error: {bad}: corrupt or truncated gzip file (the download or copy is incomplete)"] or (
        len(lines) == 1 and lines[0].startswith(f"Error: {bad}: corrupt or truncated")), proc.stderr
    assert not (tmp_path / "run").exists()


def _native_log(line):
    """TensorFlow's C++ start-up lines (absl), printed before Python runs and not ours to silence."""
    return bool(re.match(r"^[IWE]\d{4} |^WARNING: All log messages before absl|^To enable the following", line))


def test_failed_preprocess_does_not_block_a_rerun_with_other_settings(assets, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(assets / "clean", data)
    shutil.rmtree(data / "BraTS_Synth_001")
    bad = zero_bytes(data)
    out = tmp_path / "cache"
    assert run_cli(cli, ["preprocess", str(data), str(out), "--size", "8", "--quiet"]) == 2
    assert "empty file" in capsys.readouterr().err and not out.exists()
    shutil.copy(data / "BraTS_Synth_003" / "BraTS_Synth_003_t1.nii.gz", bad)  # fixed
    assert run_cli(cli, ["preprocess", str(data), str(out), "--size", "12", "--quiet"]) == 0, capsys.readouterr()
    assert json.loads((out / "settings.json").read_text())["size"] == [12, 12, 12]


def test_a_one_level_encoder_pretrained_then_fine_tuned(assets, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(assets / "clean", data)
    Encoder3D(in_channels=4, filters=(4,)).save_pretrained(tmp_path / "one_level")  # as `pretrain --filters 4`
    argv = ["finetune", "--data", str(data), "--encoder", str(tmp_path / "one_level"), "--out", str(tmp_path / "ft"),
            "--size", "8", "--epochs", "1", "--batch-size", "1", "--verbose", "0"]
    assert run_cli(cli, argv) == 0, capsys.readouterr().err
    metadata = json.loads((tmp_path / "ft" / "model" / "metadata.json").read_text())
    assert metadata["input_size"] == [8, 8, 8]
