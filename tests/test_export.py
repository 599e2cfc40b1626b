"""TF-Hub style SavedModel export: tensorflow_hub.load and keras.layers.TFSMLayer reproduce the encoder."""

import io
import tarfile

import keras
import numpy as np
import pytest
from helpers import random_images, random_volumes, tiny_encoder2d, tiny_encoder3d, to_numpy

from keras_ssl3d import PresetError

pytestmark = [
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export is TF-only"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),  # tensorflow_hub imports pkg_resources
]

TOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from keras_ssl3d.zoo.export import export_saved_model

    keras.utils.set_random_seed(3)
    enc = tiny_encoder3d(2, filters=(8, 16))
    # Non-trivial BatchNorm statistics, so training=True and False give different outputs.
    for layer in enc.layers:
        for v in getattr(layer, "non_trainable_variables", []):
            if "moving_mean" in v.path:
                v.assign(np.full(v.shape, 0.3, np.float32))
    root = tmp_path_factory.mktemp("export")
    path = export_saved_model(enc, root / "saved_model")
    return enc, path, root


def test_tensorflow_hub_load_reproduces_the_encoder(exported):
    hub = pytest.importorskip("tensorflow_hub")
    enc, path, _ = exported
    module = hub.load(str(path))  # keep a reference: the variables live as long as `module`
    x = random_volumes(2, 8, 2)
    ref = to_numpy(enc(x, training=False))
    assert np.abs(np.asarray(module(x)) - ref).max() < TOL
    assert np.abs(np.asarray(module(x, training=False)) - ref).max() < TOL
    assert np.abs(np.asarray(module.serve(x)) - ref).max() < TOL
    # Reusable-SavedModel attributes.
    assert len(module.variables) == len(enc.variables)
    assert len(module.trainable_variables) == len(enc.trainable_variables)
    assert list(module.regularization_losses) == []
    # Spatial dimensions are dynamic.
    y = random_volumes(1, 12, 2, seed=1)
    assert np.abs(np.asarray(module.serve(y)) - to_numpy(enc(y, training=False))).max() < TOL
    # training=True uses batch statistics (differs from inference here) and, as in Keras, updates the
    # module's BatchNorm moving statistics, so inference afterwards differs from the original encoder.
    assert np.abs(np.asarray(module(x, training=True)) - ref).max() > 1e-3
    assert np.abs(np.asarray(module.serve(x)) - ref).max() > 1e-4


def test_tfsmlayer_inside_a_keras3_model(exported):
    enc, path, _ = exported
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(layer(inputs)))
    x = random_volumes(2, 8, 2, seed=2)
    assert np.abs(to_numpy(layer(x)) - to_numpy(enc(x, training=False))).max() < TOL
    pooled = to_numpy(enc(x, training=False)).mean(axis=(1, 2, 3))
    assert np.abs(to_numpy(model(x)) - pooled).max() < TOL


def test_tfhub_tgz_round_trip(exported, tmp_path):
    hub = pytest.importorskip("tensorflow_hub")
    from keras_ssl3d.zoo.export import export_saved_model, extract_tfhub_tgz

    enc, _, _ = exported
    archive = export_saved_model(enc, tmp_path / "module.tar.gz", format="tfhub-tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "saved_model.pb" in names and all(not n.startswith(("/", "..")) for n in names)
    folder = extract_tfhub_tgz(archive, tmp_path / "extracted")
    module = hub.load(str(folder))
    x = random_volumes(1, 8, 2, seed=4)
    assert np.abs(np.asarray(module.serve(x)) - to_numpy(enc(x, training=False))).max() < TOL


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "link"])
def test_extract_refuses_members_outside_the_target(tmp_path, member):
    from keras_ssl3d.zoo.export import extract_tfhub_tgz

    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)  # TarInfo keeps the name verbatim (tar.add would strip a leading /)
        if member == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PresetError):
        extract_tfhub_tgz(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "target").exists()


def test_export_2d_encoder(tmp_path):
    hub = pytest.importorskip("tensorflow_hub")
    from keras_ssl3d.zoo.export import export_saved_model

    enc = tiny_encoder2d(3)
    path = export_saved_model(enc, tmp_path / "sm2d")
    module = hub.load(str(path))
    x = random_images(2, 32, 3)
    assert np.abs(np.asarray(module.serve(x)) - to_numpy(enc(x, training=False))).max() < TOL


def test_cli_export_from_a_preset_folder(tmp_path, capsys):
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli

    keras.utils.set_random_seed(1)
    enc = tiny_encoder3d(2, filters=(8, 16))
    enc.save_pretrained(tmp_path / "preset")
    out = tmp_path / "exported"
    assert run_cli(cli, ["export", str(tmp_path / "preset"), str(out), "--in-channels", "4"]) == 0
    assert "exported" in capsys.readouterr().out
    layer = keras.layers.TFSMLayer(str(out), call_endpoint="serve")
    x = random_volumes(1, 8, 2, seed=5)
    # Duplicated input-layer weights: a 4-channel input repeating the 2 channels gives the same features.
    assert np.abs(to_numpy(layer(np.concatenate([x, x], -1))) - to_numpy(enc(x, training=False))).max() < TOL
    assert run_cli(cli, ["export", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "Error:" in capsys.readouterr().err
