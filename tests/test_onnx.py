"""ONNX export (keras_ssl3d/zoo/onnx.py, `keras-ssl3d export ... --format onnx`) checked with onnxruntime."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import tiny_encoder3d

from keras_ssl3d import Segmenter3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.losses import DiceCELoss

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'keras-ssl3d[onnx]')")
pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install 'keras-ssl3d[onnx]')")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="Keras exports ONNX on the TensorFlow backend only")

from keras_ssl3d.zoo.onnx import export_onnx, onnx_max_abs_diff  # noqa: E402


def _fine_tuned_segmenter(folder, channels=2):
    """A tiny Segmenter3D after two training steps (batch-norm statistics moved), saved as a preset."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16, 16, channels), dtype=np.float32)
    y = keras.ops.one_hot(rng.integers(0, 3, (2, 16, 16, 16)), 3)
    model = Segmenter3D(tiny_encoder3d(channels, filters=(4, 8)), num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=DiceCELoss())
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    model.save_pretrained(folder)
    return model


def test_encoder_matches_onnxruntime_at_other_sizes(tmp_path):
    encoder = tiny_encoder3d(2, filters=(4, 8))
    path = export_onnx(encoder, tmp_path / "encoder.onnx")
    diffs = [onnx_max_abs_diff(encoder, path)]  # the example input, 1x2x2x2x2
    diffs.append(onnx_max_abs_diff(encoder, path, np.random.default_rng(1).random((2, 24, 16, 8, 2))))
    print(f"encoder: Keras vs onnxruntime max abs diff {max(diffs):.2e}")
    assert max(diffs) < 1e-4
    assert sorted(os.listdir(tmp_path)) == ["encoder.onnx"]  # no temporary file left


def test_cli_exports_a_fine_tuned_segmenter(tmp_path, capsys):
    model = _fine_tuned_segmenter(tmp_path / "seg")
    out = tmp_path / "seg.onnx"
    assert run_cli(cli, ["export", str(tmp_path / "seg"), str(out), "--format", "onnx"]) == 0
    assert "[onnx]" in capsys.readouterr().out
    x = np.random.default_rng(2).random((2, 32, 16, 16, 2))
    diff = onnx_max_abs_diff(model, out, x)
    print(f"segmenter: Keras vs onnxruntime max abs diff {diff:.2e}")
    assert diff < 1e-4

    # Never over an existing file (the user's, or an earlier export).
    before = out.read_bytes()
    assert run_cli(cli, ["export", str(tmp_path / "seg"), str(out), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"Error: {out}: holds an earlier ONNX model; pass --overwrite to replace it, or choose a new file name"
    assert out.read_bytes() == before
    user_file = tmp_path / "notes.onnx"  # a file of the user's is never replaced, not even with --overwrite
    user_file.write_text("mine")
    assert run_cli(cli, ["export", str(tmp_path / "seg"), str(user_file), "--format", "onnx", "--overwrite"]) == 2
    assert "was not written by keras-ssl3d as an ONNX model" in capsys.readouterr().err
    assert user_file.read_text() == "mine"
    assert run_cli(cli, ["export", str(tmp_path / "seg"), str(out), "--format", "onnx", "--overwrite"]) == 0


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends_refuse_in_one_line(tmp_path, backend):
    tiny_encoder3d(2, filters=(4, 8)).save_pretrained(tmp_path / "enc")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    exe = os.path.join(os.path.dirname(sys.executable), "keras-ssl3d")
    proc = subprocess.run([exe, "export", str(tmp_path / "enc"),
                           str(tmp_path / "enc.onnx"), "--format", "onnx"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: export needs KERAS_BACKEND=tensorflow (this process uses {backend!r})"]
    assert not (tmp_path / "enc.onnx").exists()


def test_readme_onnx_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    from readme_snippets import code_blocks, run_python

    monkeypatch.chdir(tmp_path)
    model = _fine_tuned_segmenter(tmp_path / "runs" / "seg" / "model", channels=4)
    bash, python = code_blocks("Deploy with ONNX", "bash")[0], code_blocks("Deploy with ONNX")[0]
    command = bash.splitlines()[1].split("#")[0].split()
    assert command[0] == "keras-ssl3d"
    assert run_cli(cli, command[1:]) == 0, capsys.readouterr().err
    ns = run_python(python)
    assert ns["probs"].shape == (1, 32, 32, 32, 3)
    np.testing.assert_allclose(ns["probs"], keras.ops.convert_to_numpy(model(ns["volume"])), atol=1e-5)
