"""`pretrain --remat`, `pretrain --micro-batches` and `finetune --remat --precision ...` end to end (tiny),
recorded in run.json."""

import json

import keras
import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    from keras_ssl3d.data.synthetic import make_brats_like

    root = tmp_path_factory.mktemp("memory")
    make_brats_like(root / "brats", n_subjects=4, shape=(18, 16, 16), seed=0)
    return root


def test_pretrain_remat_then_finetune_remat_mixed_precision(brats, capsys):
    pre = brats / "pretrain"
    code = run_cli(cli, ["pretrain", "--task", "rotation", "--data", str(brats / "brats"), "--out", str(pre),
                         "--size", "16", "--filters", "4,8", "--epochs", "1", "--batch-size", "2", "--remat"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((pre / "run.json").read_text())["config"]
    assert config["remat"] is True and config["precision"] == "float32"
    preset = json.loads((pre / "encoder" / "config.json").read_text())
    assert preset["config"]["remat"] is False  # a setting of the run, not of the preset

    run = brats / "finetune"
    code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--encoder", str(pre), "--out", str(run),
                         "--size", "16", "--batch-size", "2", "--epochs", "1", "--strategy", "full", "--verbose", "0",
                         "--remat", "--precision", "mixed_bfloat16"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["remat"] is True and config["precision"] == "mixed_bfloat16"
    result = json.loads((run / "result.json").read_text())
    assert np.isfinite(result["final_score"])
    assert keras.config.dtype_policy().name == "float32"  # the policy was only set while building

    code = run_cli(cli, ["pretrain", "--task", "rotation", "--dims", "2", "--data", str(brats / "brats"),
                         "--out", str(brats / "bad"), "--remat"])
    assert code == 2 and "--remat applies to the 3D encoder" in capsys.readouterr().err


def test_pretrain_exemplar_in_micro_batches(brats, capsys):
    run = brats / "exemplar"
    args = ["pretrain", "--task", "exemplar", "--data", str(brats / "brats"), "--size", "16", "--filters", "4,8",
            "--epochs", "1", "--batch-size", "2", "--task-option", "code_size=8", "--task-option", "hidden_units=8"]
    code = run_cli(cli, [*args, "--out", str(run), "--micro-batches", "4"])  # 2 samples x 2 views: parts of 1
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["micro_batches"] == 4
    preset = json.loads((run / "encoder" / "config.json").read_text())
    assert preset["config"]["micro_batches"] == 1  # a setting of the run, not of the preset
    loss = np.loadtxt(run / "history.csv", delimiter=",", skiprows=1, ndmin=2)
    assert np.isfinite(loss).all()

    code = run_cli(cli, [*args, "--out", str(brats / "too-many"), "--micro-batches", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "--micro-batches 5 is more than the 4 inputs" in err and len(err.strip().splitlines()) == 1
    assert not (brats / "too-many" / "run.json").exists()
    code = run_cli(cli, [*args[:2], "genesis", *args[3:-4], "--out", str(brats / "genesis"), "--micro-batches", "2"])
    assert code == 2 and "--micro-batches applies to" in capsys.readouterr().err


def test_mixed_float16_is_refused_on_tensorflow_cpu():
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.training.precision import precision_policy

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow CPU limit")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("has a GPU")
    with pytest.raises(ConfigError, match="mixed_float16 needs a GPU"):
        with precision_policy("mixed_float16"):
            pass
    assert keras.config.dtype_policy().name == "float32"
