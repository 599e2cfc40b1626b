"""The frozen-encoder probe: an encoder built to detect the tumour's intensity beats a random one."""

import dataclasses
import json
import re

import keras
import numpy as np
import pytest

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.finetune.probe import ProbeHead, ProbeSettings, probe_model, random_like, run_probe

pytestmark = pytest.mark.multibackend
CHANNELS = ["t1", "t1ce", "t2", "flair"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_brats_like(tmp_path_factory.mktemp("probe") / "data", n_subjects=8, shape=(24, 24, 24), seed=0)


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory):
    from keras_ssl3d.data.labelled import load_task_data

    return load_task_data(data_dir, size=16, cache_root=tmp_path_factory.mktemp("cache"))


def detector_encoder():
    """Level 1 of a (4, 8) encoder whose channels fire where the tumour's intensities are.

    In the preprocessed synthetic data (`make_brats_like`) tumour voxels are bright in FLAIR and T2
    (oedema, above ~0.65 / ~0.75) and in T1ce (enhancing, above ~0.7), where the brain is mostly below.
    The block's main path is zeroed; its 1x1x1 shortcut with batch norm in inference mode (moving mean 0,
    variance 1: about the identity, plus beta) makes channel k = relu(10 * (channel - threshold)).
    """
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=4, filters=(4, 8), channel_names=CHANNELS)
    block = encoder.get_layer("level1_block1")
    for w in block.conv1.weights + block.conv2.weights:
        w.assign(np.zeros(w.shape, "float32"))
    kernel = np.zeros(block.shortcut_conv.kernel.shape, "float32")
    beta = np.zeros(4, "float32")
    for out, (channel, threshold) in enumerate([("flair", 0.65), ("t2", 0.75), ("t1ce", 0.7), ("flair", 0.3)]):
        kernel[0, 0, 0, CHANNELS.index(channel), out] = 10.0
        beta[out] = -10.0 * threshold
    block.shortcut_conv.kernel.assign(kernel)
    block.shortcut_norm.beta.assign(beta)
    return encoder


def test_head_is_serializable_and_sums_the_upsampled_levels():
    head = ProbeHead(3, 2)
    clone = ProbeHead.from_config(head.get_config())
    assert (clone.num_classes, clone.num_levels) == (3, 2)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, ProbeHead) and restored.get_config() == head.get_config()
    fine, coarse = np.ones((1, 4, 4, 4, 2), "float32"), np.ones((1, 2, 2, 2, 5), "float32")
    out = keras.ops.convert_to_numpy(head([fine, coarse]))
    assert out.shape == (1, 4, 4, 4, 3) and np.allclose(out.sum(-1), 1.0, atol=1e-5)


def test_probe_freezes_the_encoder():
    encoder = detector_encoder()
    before = [w.copy() for w in encoder.get_weights()]  # moving statistics included
    model = probe_model(encoder, 4)
    assert not encoder.trainable and {v.path for v in model.trainable_variables} <= {
        v.path for v in model.get_layer("probe_head").trainable_variables}
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((2, 16, 16, 16, 4)).astype("float32")
    y = np.eye(4, dtype="float32")[np.zeros((2, 16, 16, 16), int)]
    model.fit(x, y, epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, encoder.get_weights()))


def test_a_tumour_detector_beats_a_random_encoder(data):
    settings = ProbeSettings(epochs=40, lr=1e-2, test_fraction=0.25, val_fraction=0.2)
    built = run_probe(data, detector_encoder(), settings, "detector")
    random = run_probe(data, random_like(detector_encoder(), seed=0), settings, "random")
    print(built["mean_dice"], random["mean_dice"])
    assert (built["scored_on"], built["scored_size"], built["train_size"]) == ("test", 2, 5)
    assert built["mean_dice"] > random["mean_dice"] + 0.1
    again = run_probe(data, random_like(detector_encoder(), seed=0), settings, "random")
    assert again["mean_dice"] == pytest.approx(random["mean_dice"], abs=1e-6)  # seeds fixed
    # the same passes over the 5 labelled subjects in 4 epochs of 30 steps (12 whole passes each): same verdict
    stepped = dataclasses.replace(settings, epochs=4, steps_per_epoch=30)
    built = run_probe(data, detector_encoder(), stepped, "detector")
    assert built["steps_per_epoch"] == 30 and built["epochs"] == 4
    assert built["mean_dice"] > run_probe(data, random_like(detector_encoder(), seed=0), stepped)["mean_dice"] + 0.1


def test_no_held_out_subjects_is_refused_before_any_data():
    from keras_ssl3d.errors import ConfigError

    with pytest.raises(ConfigError, match="the probe is scored on held-out subjects: set --test-fraction or "
                                          "--val-fraction > 0"):
        ProbeSettings(test_fraction=0, val_fraction=0).check()


def _probe(data_dir, out, *extra):
    return ["probe", "--data", str(data_dir), "--out", str(out), "--size", "16", "--epochs", "1", *extra]


def test_cli_one_line_per_score_and_its_own_folder(data_dir, tmp_path, capsys):
    detector_encoder().save_pretrained(tmp_path / "detector")
    out = tmp_path / "out"
    assert run_cli(cli, _probe(data_dir, out, "--encoder", str(tmp_path / "detector"))) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("probe ")]
    assert len(lines) == 2, lines
    assert re.fullmatch(r"probe detector: test mean Dice \d\.\d{4} \(2 test subjects; head trained on 5 for 1 "
                        r"epochs\)", lines[0]), lines[0]
    assert lines[1].startswith("probe random: test mean Dice ")
    record = json.loads((out / "probe.json").read_text())
    assert [p["name"] for p in record["probes"]] == ["detector", "random"]
    assert sorted(p.name for p in out.iterdir()) == ["probe.json"]
    # its own folder may be written again
    assert run_cli(cli, _probe(data_dir, out, "--encoder", "none", "--filters", "4,8")) == 0
    assert [p["name"] for p in json.loads((out / "probe.json").read_text())["probes"]] == ["random"]
    assert run_cli(cli, _probe(data_dir, out, "--encoder", "none", "--filters", "4,8", "--steps-per-epoch", "6")) == 0
    assert json.loads((out / "probe.json").read_text())["probes"][0]["steps_per_epoch"] == 6


@pytest.mark.parametrize("case,message", [
    ("user_folder", r"--out: .*mine\.txt|not empty"),
    ("no_encoder", r"does not exist|not found|unknown preset"),
    ("bad_fraction", r"--label-fraction.*0 is not in the range 0<x<=1"),
    ("no_test", r"--test-fraction.*0\.0 is not in the range 0<x<1"),
])
def test_cli_refuses_bad_input_in_one_line(case, message, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _probe(data_dir, out, "--encoder", "none", "--filters", "4,8")
    if case == "user_folder":
        out.mkdir()
        (out / "mine.txt").write_text("the user's\n")
    elif case == "no_encoder":
        argv = _probe(data_dir, out, "--encoder", str(tmp_path / "missing"))
    elif case == "bad_fraction":
        argv += ["--label-fraction", "0"]
    else:
        argv += ["--test-fraction", "0"]
    capsys.readouterr()
    code = run_cli(cli, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("Error: "), err
    assert re.search(message, err[0]), err[0]
    print(err[0])
    if case == "user_folder":
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    else:
        assert not out.exists() and not list(tmp_path.glob("keras-ssl3d-cache*"))
