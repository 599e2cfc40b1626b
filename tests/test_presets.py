import json

import keras
import numpy as np
import pytest

from keras_ssl3d import Classifier2D, Encoder2D, Encoder3D, PresetError, Segmenter3D
from keras_ssl3d.presets import read_metadata, sha256_file
from tests.helpers import random_images, random_volumes, tiny_encoder2d, tiny_encoder3d, to_numpy

pytestmark = pytest.mark.multibackend


def _models():
    return [
        (tiny_encoder3d(in_channels=2, channel_names=["t1", "flair"]), random_volumes(1, 16, 2)),
        (Segmenter3D(tiny_encoder3d(in_channels=1, norm="group"), num_classes=3), random_volumes(1, 16, 1)),
        (tiny_encoder2d(in_channels=3, pooling="avg"), random_images(1, 32, 3)),
        (Classifier2D(tiny_encoder2d(in_channels=3), num_classes=5), random_images(1, 32, 3)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_keras_file_round_trip(tmp_path, index):
    model, x = _models()[index]
    expected = to_numpy(model(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(to_numpy(loaded(x)), expected, rtol=1e-5, atol=1e-6)
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("index", range(4))
def test_weights_h5_round_trip(tmp_path, index):
    model, x = _models()[index]
    expected = to_numpy(model(x))
    model.save_weights(tmp_path / "m.weights.h5")
    clone = type(model).from_config(model.get_config())
    clone.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(to_numpy(clone(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", range(4))
def test_save_pretrained_round_trip(tmp_path, index):
    model, x = _models()[index]
    expected = to_numpy(model(x))
    folder = model.save_pretrained(tmp_path / "preset", metadata={"task": "unit-test"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    meta = read_metadata(folder)
    assert meta["task"] == "unit-test"
    assert meta["parameter_count"] == model.count_params()
    assert meta["weights_sha256"] == sha256_file(folder / "model.weights.h5")
    assert meta["keras_version"] == keras.__version__
    assert meta["input_contract"]["in_channels"] == model.in_channels
    assert meta["input_contract"]["orientation"] == "RAS"
    loaded = type(model).from_pretrained(folder)
    np.testing.assert_allclose(to_numpy(loaded(x)), expected, rtol=1e-5, atol=1e-6)


def test_channel_names_travel_with_the_preset(tmp_path):
    encoder = tiny_encoder3d(in_channels=2, channel_names=["t1", "flair"])
    encoder.save_pretrained(tmp_path / "p")
    assert read_metadata(tmp_path / "p")["input_contract"]["channel_names"] == ["t1", "flair"]
    assert Encoder3D.from_pretrained(tmp_path / "p").channel_names == ["t1", "flair"]


def test_from_pretrained_keras_file(tmp_path):
    encoder = tiny_encoder3d()
    encoder.save(tmp_path / "enc.keras")
    assert isinstance(Encoder3D.from_pretrained(str(tmp_path / "enc.keras")), Encoder3D)
    with pytest.raises(PresetError, match="not a Encoder2D"):
        Encoder2D.from_pretrained(str(tmp_path / "enc.keras"))


def test_corrupted_weights_are_refused(tmp_path):
    folder = tiny_encoder3d().save_pretrained(tmp_path / "p")
    weights = folder / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PresetError, match="sha256 .* does not match"):
        Encoder3D.from_pretrained(folder)


def test_truncated_weights_with_matching_sha_give_clear_error(tmp_path):
    folder = tiny_encoder3d().save_pretrained(tmp_path / "p")
    weights = folder / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    meta = json.loads((folder / "metadata.json").read_text())
    meta["weights_sha256"] = sha256_file(weights)
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PresetError, match="cannot load weights"):
        Encoder3D.from_pretrained(folder)


def test_bad_preset_folders(tmp_path):
    with pytest.raises(PresetError, match="does not exist"):
        Encoder3D.from_pretrained(str(tmp_path / "missing") + "/")
    folder = tiny_encoder3d().save_pretrained(tmp_path / "p")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(PresetError, match="config is not valid JSON"):
        Encoder3D.from_pretrained(folder)
    folder = tiny_encoder3d().save_pretrained(tmp_path / "q")
    with pytest.raises(PresetError, match="not a Encoder2D"):
        Encoder2D.from_pretrained(folder)
    (folder / "metadata.json").unlink()
    with pytest.raises(PresetError, match="metadata.json is missing"):
        Encoder3D.from_pretrained(folder)


def test_save_pretrained_is_atomic_and_overwrites(tmp_path):
    first = tiny_encoder3d()
    first.save_pretrained(tmp_path / "p")
    second = tiny_encoder3d(filters=(2, 4))
    second.save_pretrained(tmp_path / "p")
    assert Encoder3D.from_pretrained(tmp_path / "p").filters == (2, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folders left behind
