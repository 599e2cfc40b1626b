"""The README's "Use it from PyTorch / MONAI" recipe runs as written on the torch backend.

A Segmenter3D on a pretrained Encoder3D trains in a plain torch loop (torch.optim.AdamW, MONAI
DiceCELoss), predicts with MONAI's sliding_window_inference, and its saved presets load on TensorFlow
(in a fresh process) with the same outputs.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import tiny_encoder3d
from readme_snippets import code_blocks, run_python

pytestmark = [
    pytest.mark.multibackend,  # collected in the torch phase of tests/run.sh
    pytest.mark.skipif(keras.backend.backend() != "torch",
                       reason="a plain PyTorch training loop needs KERAS_BACKEND=torch"),
]


def _to_numpy(t):
    return t.detach().cpu().numpy()


def test_readme_recipe_trains_infers_and_reloads_on_tensorflow(tmp_path, monkeypatch):
    pytest.importorskip("monai", reason="MONAI is not installed (pip install 'keras-ssl3d[test]')")
    import torch

    tiny_encoder3d(2, filters=(4, 8)).save_pretrained(tmp_path / "my-encoder")
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("Use it from PyTorch / MONAI")
    ns = run_python(code)
    model, losses = ns["model"], ns["losses"]

    assert len(losses) == 20 and np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.05, losses  # it learns the (random) batch it sees
    moving_means = [v for v in model.variables if v.path.endswith("moving_mean")]
    assert moving_means and all(np.abs(_to_numpy(v.value)).max() > 0 for v in moving_means)  # updated from 0
    probs = _to_numpy(ns["probs"])
    assert probs.shape == (1, 3, 48, 48, 48)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # The trap the README names: torch's train()/eval() flag does not switch Keras layers.
    images = ns["images"]
    with torch.no_grad():
        model.train()
        as_if_training = _to_numpy(model(images))
        inference = _to_numpy(model(images, training=False))
        model.eval()
    np.testing.assert_array_equal(as_if_training, inference)

    # The presets written from torch give the same outputs on TensorFlow.
    x = np.random.default_rng(0).random((1, 16, 16, 16, 2), dtype=np.float32)
    with torch.no_grad():
        np.savez(tmp_path / "io.npz", x=x, seg=_to_numpy(model(x, training=False)),
                 enc=_to_numpy(model.encoder(x, training=False)))
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import numpy as np
        from keras_ssl3d import Encoder3D, Segmenter3D
        d = np.load("io.npz")
        seg = Segmenter3D.from_pretrained("my-segmenter-torch")
        enc = Encoder3D.from_pretrained("my-encoder-torch")
        print("RESULT " + json.dumps({"seg": float(np.abs(np.asarray(seg(d["x"])) - d["seg"]).max()),
                                      "enc": float(np.abs(np.asarray(enc(d["x"])) - d["enc"]).max())}))
    """))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = json.loads(proc.stdout.split("RESULT ", 1)[1])
    print(f"torch-trained presets reloaded on TensorFlow: max abs diff {diffs}")
    assert diffs["seg"] < 1e-5 and diffs["enc"] < 1e-5
