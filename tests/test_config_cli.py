"""Task settings (--task-option), config files (--config, RUN/config.yaml, zoo recipe) and TensorBoard logs."""

import json

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli

TINY = ["--dims", "3", "--epochs", "1", "--batch-size", "2", "--size", "16", "--filters", "4,8", "--seed", "1"]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(0)
    for i in range(3):
        volume = np.zeros((20, 20, 18), np.float32)
        volume[3:17, 4:16, 2:16] = rng.random((14, 12, 14)) + 0.5
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"subject{i}.nii.gz"))
    return folder


def _recorded(run):
    config = json.loads((run / "run.json").read_text())["config"]
    meta = json.loads((run / "encoder" / "metadata.json").read_text())
    return config, meta


@pytest.mark.parametrize("task, given, expected", [
    ("cpc", ["grid=2", "jitter=1", "steps=1", "code_size=16", "embedding_dim=8", "temperature=0.5"],
     {"grid": 2, "jitter": 1, "steps": 1, "code_size": 16, "embedding_dim": 8, "temperature": 0.5}),
    ("exemplar", ["code_size=8", "hidden_units=16", "margin=0.5", "flip_p=0", "rotation_p=1", "color_p=0.25",
                  "zoom_p=0"],
     {"code_size": 8, "hidden_units": 16, "margin": 0.5, "flip_p": 0, "rotation_p": 1, "color_p": 0.25,
      "zoom_p": 0}),
])
def test_task_options_reach_run_json_and_preset_metadata(volumes, tmp_path, task, given, expected):
    run = tmp_path / "run"
    args = ["pretrain", "--task", task, "--data", str(volumes), "--out", str(run), *TINY]
    for item in given:
        args += ["--task-option", item]
    assert run_cli(cli, args=args) == 0
    config, meta = _recorded(run)
    for key, value in expected.items():
        assert config["task_config"][key] == value, key
        assert meta["hyperparameters"]["task_config"][key] == value, key


@pytest.mark.parametrize("option, message", [
    ("gird=3", "gird: cpc has no such setting"),
    ("grid", "expected KEY=VALUE"),
    ("grid=[1, 2", "cannot parse value"),
    ("grid=9", "grid=9"),  # does not fit --size 16: the task's own ValueError, naming the option
    ("encoder=x", "encoder: cpc has no such setting"),
])
def test_bad_task_option_is_one_line(volumes, tmp_path, capsys, option, message):
    run = tmp_path / "run"
    args = ["pretrain", "--task", "cpc", "--data", str(volumes), "--out", str(run), *TINY, "--task-option", option]
    assert run_cli(cli, args=args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not run.exists()
