"""Genesis / MAE presets hold the U-Net: fine-tuning starts the decoder from it (TensorFlow, tiny shapes)."""

import json

import numpy as np
import pytest

from keras_ssl3d import Encoder3D, Segmenter3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.presets import load_preset


@pytest.fixture(scope="module")
def genesis_run(tmp_path_factory):
    """A Genesis U-Net preset where ``keras-ssl3d pretrain`` puts it (RUN/encoder), and labelled data."""
    from keras_ssl3d.data.synthetic import make_brats_like
    from keras_ssl3d.tasks import Genesis

    root = tmp_path_factory.mktemp("decoder")
    make_brats_like(root / "brats", n_subjects=3, shape=(20, 20, 16), seed=0)
    task = Genesis(Encoder3D(in_channels=4, filters=(4, 8)))
    task.pretrained_model().save_pretrained(root / "pre" / "encoder", metadata={"task": "genesis"})
    return root


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_from_pretrained_starts_the_decoder_from_the_preset(genesis_run):
    folder = genesis_run / "pre" / "encoder"
    assert json.loads((folder / "metadata.json").read_text())["class_name"] == "Segmenter3D"
    preset = load_preset(folder)
    model = Segmenter3D.from_pretrained(folder, num_classes=3)
    assert _same(model.decoder.get_weights(), preset.decoder.get_weights())
    assert _same(model.encoder.get_weights(), preset.encoder.get_weights())
    assert model.output_shape[-1] == 3 and preset.output_shape[-1] == 4  # a fresh output layer
    adapted = Segmenter3D.from_pretrained(folder, num_classes=2, in_channels=2)  # channel adaptation
    assert adapted.in_channels == 2 and _same(adapted.decoder.get_weights(), preset.decoder.get_weights())
    assert Segmenter3D.from_pretrained(folder).num_classes == 4                   # as saved
    encoder = Encoder3D.from_pretrained(folder)                                   # its encoder alone
    assert _same(encoder.get_weights(), preset.encoder.get_weights())


def test_finetune_loads_the_decoder_and_says_so(genesis_run, capsys):
    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.finetune.model import build_model

    folder = genesis_run / "pre" / "encoder"
    data = load_task_data(genesis_run / "brats", size=16)
    model, adapted, decoder = build_model(data, str(genesis_run / "pre"))
    assert decoder == "pretrained" and adapted == "none"
    assert _same(model.decoder.get_weights(), load_preset(folder).decoder.get_weights())  # before training
    scratch_decoder = build_model(data, "none", filters=(4, 8))[2]
    assert scratch_decoder == "fresh"
    run = genesis_run / "ft"
    code = run_cli(cli, ["finetune", "--data", str(genesis_run / "brats"), "--encoder", str(folder), "--out", str(run),
                         "--epochs", "1", "--size", "16", "--val-fraction", "0", "--verbose", "0"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Decoder:")]
    assert lines == [f"Decoder: starting from the pretrained decoder of {folder} (with a fresh output layer)"]
    assert json.loads((run / "model" / "metadata.json").read_text())["decoder"] == "pretrained"
