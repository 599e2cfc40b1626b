"""keras-hub's own loaders load keras-ssl3d presets (keras_ssl3d/integrations/keras_hub.py).

Skipped where keras-hub is not installed (``pip install 'keras-ssl3d[keras-hub]'``); the publish test
runs keras_hub.upload_preset against the local fake hub (tests/hub_server.py) in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import random_volumes, tiny_encoder3d, to_numpy
from hub_server import hub_server  # noqa: F401  (fixture)

from keras_ssl3d import Encoder3D, Segmenter3D
from keras_ssl3d.presets import resolve_handle

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed (pip install 'keras-ssl3d[keras-hub]', which needs a "
                        "tensorflow-text wheel for this Python and TensorFlow)")


@pytest.fixture(scope="module", autouse=True)
def _backbone_twins():
    """What `import keras_ssl3d.integrations.keras_hub` does, undone for the other test files."""
    from keras_ssl3d.integrations import keras_hub as integration

    integration.register()
    yield
    integration.unregister()

TOKEN = "hf_fake_write_token_123456"  # the fake hub's write token (see the hub_server fixture)


def _run_py(code, env_extra, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.mark.multibackend
def test_backbone_from_preset_loads_encoder_and_segmenter_folders(tmp_path):
    x = random_volumes(1, 8, 2)
    encoder = tiny_encoder3d(2, filters=(4, 8))
    segmenter = Segmenter3D(encoder, num_classes=3)
    encoder.save_pretrained(tmp_path / "enc")
    segmenter.save_pretrained(tmp_path / "seg")

    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "enc"))
    assert isinstance(backbone, keras_hub.models.Backbone) and isinstance(backbone, Encoder3D)
    assert type(backbone).__name__ == "Encoder3D" and backbone.filters == (4, 8)
    np.testing.assert_array_equal(to_numpy(backbone(x)), to_numpy(encoder(x)))
    unet = keras_hub.models.Backbone.from_preset(str(tmp_path / "seg"))
    assert isinstance(unet, Segmenter3D) and isinstance(unet.encoder, Encoder3D)
    np.testing.assert_array_equal(to_numpy(unet(x)), to_numpy(segmenter(x)))

    # The zoo's bundled presets are plain preset folders too.
    demo = keras_hub.models.Backbone.from_preset(str(resolve_handle("demo-brats-cpc").path))
    assert isinstance(demo, Encoder3D) and demo.in_channels == 4

    # A keras-hub style save writes our format (metadata.json with the weights' sha256) ...
    backbone.save_to_preset(str(tmp_path / "resaved"))
    meta = json.loads((tmp_path / "resaved" / "metadata.json").read_text())
    assert meta["class_name"] == "Encoder3D" and len(meta["weights_sha256"]) == 64
    # ... which our own loader verifies and loads.
    again = Encoder3D.from_pretrained(tmp_path / "resaved")
    assert type(again) is Encoder3D  # our own loaders return the plain class, keras-hub installed or not
    np.testing.assert_array_equal(to_numpy(again(x)), to_numpy(encoder(x)))


def test_presets_saved_through_keras_hub_load_without_it(tmp_path):
    """A preset saved while the Backbone twins are registered loads as the plain class without keras-hub."""
    x = random_volumes(1, 8, 2)
    backbone = keras_hub.models.Backbone.from_preset(str(_saved(tmp_path / "enc")))
    backbone.save_to_preset(str(tmp_path / "via-keras-hub"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", to_numpy(backbone(x)))
    out = _run_py("""
        import json, sys
        sys.modules["keras_hub"] = None  # as if keras-hub were not installed
        import numpy as np
        from keras_ssl3d import Encoder3D
        folder = sys.argv[0].rsplit("/", 1)[0]
        m = Encoder3D.from_pretrained(folder + "/via-keras-hub")
        diff = float(np.abs(np.asarray(m(np.load(folder + "/x.npy"))) - np.load(folder + "/ref.npy")).max())
        print("RESULT " + json.dumps({"module": type(m).__module__, "diff": diff}))
    """, {}, tmp_path)
    assert out == {"module": "keras_ssl3d.models.encoder3d", "diff": 0.0}


def _saved(folder):
    keras.utils.set_random_seed(1)
    tiny_encoder3d(2, filters=(4, 8)).save_pretrained(folder)
    return folder


def test_upload_preset_publishes_and_both_loaders_read_it_back(hub_server, tmp_path):  # noqa: F811
    folder = _saved(tmp_path / "enc")
    before = sorted(p.name for p in folder.iterdir())
    x = random_volumes(1, 8, 2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", to_numpy(Encoder3D.from_pretrained(folder)(x)))
    out = _run_py(f"""
        import json, sys
        import keras_hub
        import numpy as np
        import keras_ssl3d.integrations.keras_hub
        from keras_ssl3d import Encoder3D
        tmp = {str(tmp_path)!r}
        keras_hub.upload_preset("hf://org/khub-enc", tmp + "/enc")
        x, ref = np.load(tmp + "/x.npy"), np.load(tmp + "/ref.npy")
        via_hub = keras_hub.models.Backbone.from_preset("hf://org/khub-enc")
        ours = Encoder3D.from_pretrained("hf://org/khub-enc")  # checks the weights' sha256 too
        diff = lambda m: float(np.abs(np.asarray(m(x)) - ref).max())
        print("RESULT " + json.dumps({{"keras_hub": diff(via_hub), "ours": diff(ours),
                                       "is_backbone": isinstance(via_hub, keras_hub.models.Backbone)}}))
    """, {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf_home")}, tmp_path)
    assert out == {"keras_hub": 0.0, "ours": 0.0, "is_backbone": True}
    files = hub_server.files("org/khub-enc")
    assert {"config.json", "model.weights.h5", "metadata.json", "README.md"} <= set(files)
    assert b"library_name: keras-hub" in files["README.md"]
    assert sorted(p.name for p in folder.iterdir()) == before  # keras-hub removed its temporary README.md


def test_readme_keras_hub_block_runs_as_written(tmp_path, monkeypatch):
    from readme_snippets import code_blocks, run_python

    encoder = _saved(tmp_path / "my-encoder")
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("Use it from keras-hub")
    ns = run_python(code)
    x = random_volumes(1, 8, 2)
    assert isinstance(ns["backbone"], keras_hub.models.Backbone)
    np.testing.assert_array_equal(to_numpy(ns["backbone"](x)), to_numpy(Encoder3D.from_pretrained(encoder)(x)))
    assert ns["demo"].channel_names == ["t1", "t1ce", "t2", "flair"]
    assert (tmp_path / "my-encoder-copy" / "metadata.json").is_file()
