"""Fine-tuning a pretrained encoder: its own learning rate (--encoder-lr-scale), a warm-up of the learning rate
(--lr-warmup-epochs) and a fresh decoder on a U-Net preset (--decoder fresh), against hand computations."""

import json

import keras
import numpy as np
import pytest
from test_cli_hardening import _leftovers, _outputs

from keras_ssl3d import Encoder3D, Segmenter3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune.callbacks import EpochLearningRate
from keras_ssl3d.finetune.convergence import epoch_lr, poly_lr
from keras_ssl3d.finetune.optimizer import (EncoderScaledAdam, applied_scale, check_scale, encoder_paths,
                                            finetune_optimizer)

LR = 0.1


def _tiny_unet():
    keras.utils.set_random_seed(0)
    return Segmenter3D(Encoder3D(in_channels=1, filters=(2, 4), norm="none"), num_classes=2)


def _batch():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).uniform(size=(2, 8, 8, 8, 2)).astype("float32")
    return x, y


def _one_step(scale, base, callbacks=()):
    """Every trainable variable's change after one training step, and whether it is the encoder's."""
    model = _tiny_unet()
    model.compile(optimizer=finetune_optimizer(model, LR, scale, base), loss="mse")
    before = [np.array(v) for v in model.trainable_weights]
    model.fit(*_batch(), epochs=1, batch_size=2, verbose=0, shuffle=False, callbacks=list(callbacks))
    encoder = {id(v) for v in model.encoder.weights}
    return [(id(v) in encoder, np.array(v) - b) for v, b in zip(model.trainable_weights, before)], model


def _moved_by(reference, changed, encoder_factor, other_factor=1.0):
    """The largest deviation of ``changed`` from ``factor x reference`` (encoder / other variables)."""
    assert [e for e, _ in reference] == [e for e, _ in changed]
    return max(float(np.abs(d - (encoder_factor if e else other_factor) * r).max())
               for (e, r), (_, d) in zip(reference, changed))


# ------------------------------------------------------------------ the per-variable scale


@pytest.mark.multibackend
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_encoder_variables_move_by_scale_times_the_unscaled_step(base):
    plain, model = _one_step(1.0, base)
    assert type(model.optimizer).__name__ in ("SGD", "Adam")  # scale 1: the plain Keras optimizer
    scaled, model = _one_step(0.25, base)
    assert type(model.optimizer).__name__ == {"sgd": "EncoderScaledSGD", "adam": "EncoderScaledAdam"}[base]
    assert any(e for e, _ in plain) and not all(e for e, _ in plain)
    # both halves moved, by a clear amount
    assert min(float(np.abs(d).max()) for _, d in plain) > 1e-4
    # encoder: exactly a quarter of the unscaled step (SGD: lr * g; Adam's step is linear in lr); decoder/head: same
    assert _moved_by(plain, scaled, 0.25) < 1e-6
    assert _moved_by(plain, scaled, 1.0) > 1e-3  # (the comparison can fail)


@pytest.mark.multibackend
def test_scale_composes_with_the_lr_the_schedule_sets():
    """The warm-up callback sets optimizer.learning_rate (epoch 0 of 1 warm-up epoch: lr / 2); the encoder's
    rate is that times the scale."""
    plain, _ = _one_step(1.0, "sgd")
    scaled, model = _one_step(0.5, "sgd", callbacks=[EpochLearningRate(LR, 4, "constant", warmup_epochs=1)])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(LR / 2)
    assert _moved_by(plain, scaled, 0.5 * 0.5, 0.5) < 1e-6


@pytest.mark.multibackend
def test_scaled_optimizer_saves_and_loads_in_a_keras_file(tmp_path):
    model = _tiny_unet()
    model.compile(optimizer=finetune_optimizer(model, LR, 0.1), loss="mse")
    model.fit(*_batch(), epochs=1, batch_size=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.optimizer, EncoderScaledAdam)
    assert loaded.optimizer.encoder_lr_scale == 0.1
    assert loaded.optimizer.encoder_paths == tuple(encoder_paths(model)) and len(loaded.optimizer.encoder_paths) > 0
    saved = {v.path: np.array(v) for v in model.optimizer.variables}
    assert {v.path: np.array(v) for v in loaded.optimizer.variables}.keys() == saved.keys()
    for v in loaded.optimizer.variables:
        np.testing.assert_array_equal(np.array(v), saved[v.path])
    before = [np.array(v) for v in loaded.trainable_weights]
    loaded.fit(*_batch(), epochs=1, batch_size=2, verbose=0)  # trains on after loading
    assert any(not np.array_equal(b, np.array(v)) for b, v in zip(before, loaded.trainable_weights))


def test_a_new_process_loads_the_keras_file_with_the_package_loader(tmp_path):
    """``load_keras_file`` registers the package's classes (`keras_ssl3d.import_all`), the optimizer included."""
    import subprocess
    import sys

    model = _tiny_unet()
    model.compile(optimizer=finetune_optimizer(model, LR, 0.1), loss="mse")
    model.fit(*_batch(), epochs=1, batch_size=2, verbose=0)
    model.save(tmp_path / "m.keras")
    code = ("import sys; from keras_ssl3d.presets import load_keras_file; m = load_keras_file(sys.argv[1]); "
            "print(type(m.optimizer).__name__, m.optimizer.encoder_lr_scale)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["EncoderScaledAdam", "0.1"]


@pytest.mark.multibackend
def test_checkpoint_restores_the_scaled_optimizer_into_a_new_build(tmp_path):
    from keras_ssl3d.training import checkpoint as ckpt

    model = _tiny_unet()
    model.compile(optimizer=finetune_optimizer(model, LR, 0.1), loss="mse")
    model.fit(*_batch(), epochs=1, batch_size=2, verbose=0)
    path = ckpt.save_checkpoint(model, tmp_path, {"epoch": 1, "history": []})
    again = _tiny_unet()
    again.compile(optimizer=finetune_optimizer(again, LR, 0.1), loss="mse")
    ckpt.load_checkpoint(again, path)
    assert ckpt.restore_optimizer(again, path) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, again.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_warmup_rebuild_keeps_the_scale():
    """The encoder warm-up rebuilds the optimizer from its config when the encoder unfreezes."""
    from keras_ssl3d.finetune.warmup import _rebuilt_optimizer

    model = _tiny_unet()
    model.encoder.trainable = False
    model.compile(optimizer=finetune_optimizer(model, LR, 0.3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    assert not any(model.optimizer._scaled)  # only decoder/head variables while frozen
    model.encoder.trainable = True
    new = _rebuilt_optimizer(model.optimizer, model.trainable_variables)
    assert isinstance(new, EncoderScaledAdam) and new.encoder_lr_scale == 0.3
    encoder = {id(v) for v in model.encoder.weights}
    assert new._scaled == [id(v) in encoder for v in model.trainable_variables] and any(new._scaled)


def test_scale_values_and_scratch():
    assert check_scale(0.5) == 0.5 and check_scale("2") == 2.0
    for bad in (0, -1, float("nan"), float("inf"), "x"):
        with pytest.raises(ConfigError, match=r"^--encoder-lr-scale must be a finite number > 0, got "):
            check_scale(bad)
    assert applied_scale("none", 0.1) == 1.0 and applied_scale("NONE", 0.1) == 1.0  # scratch: every layer at lr
    assert applied_scale("some/preset", 0.1) == 0.1


# ------------------------------------------------------------------ the warm-up of the learning rate


@pytest.mark.multibackend
def test_lr_warmup_by_hand():
    # N = 3: lr/4, 2lr/4, 3lr/4, then lr
    assert [epoch_lr(0.8, e, 10, "constant", 3) for e in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8])
    # then poly over the 7 epochs left: 0.8 * (1 - (e - 3) / 7) ** 0.9
    assert [epoch_lr(0.8, e, 10, "poly", 3) for e in (2, 3, 4, 9)] == pytest.approx(
        [0.6, 0.8, 0.8 * (6 / 7) ** 0.9, 0.8 * (1 / 7) ** 0.9])
    # no warm-up: the constant rate and nnU-Net's poly as before
    assert [epoch_lr(0.8, e, 10, "poly") for e in range(10)] == [poly_lr(0.8, e, 10) for e in range(10)]
    assert epoch_lr(0.8, 7, 10) == 0.8


@pytest.mark.multibackend
def test_lr_warmup_callback_per_epoch_and_after_a_resume():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[EpochLearningRate(0.01, 5, "poly", 2), Record()])
    # resumed at epoch 1 (still in the warm-up) by a new callback, as a resumed run builds it
    model.fit(x, y, epochs=5, initial_epoch=1, verbose=0, callbacks=[EpochLearningRate(0.01, 5, "poly", 2), Record()])
    assert seen == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01 * (2 / 3) ** 0.9, 0.01 * (1 / 3) ** 0.9], rel=1e-6)


# ------------------------------------------------------------------ the decoder of a U-Net preset


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A Genesis U-Net preset where ``pretrain`` puts it (RUN/encoder) and labelled data."""
    from keras_ssl3d.data.synthetic import make_brats_like
    from keras_ssl3d.tasks import Genesis

    root = tmp_path_factory.mktemp("lr")
    make_brats_like(root / "brats", n_subjects=4, shape=(12, 12, 10), seed=0)
    keras.utils.set_random_seed(0)
    Genesis(Encoder3D(in_channels=4, filters=(4, 8))).pretrained_model().save_pretrained(
        root / "pre" / "encoder", metadata={"task": "genesis"})
    return root


def test_decoder_fresh_starts_a_new_decoder_on_the_pretrained_encoder(assets):
    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.finetune.model import build_model
    from keras_ssl3d.presets import load_preset

    preset = load_preset(assets / "pre" / "encoder")
    data = load_task_data(assets / "brats", size=8)
    auto, _, kept = build_model(data, str(assets / "pre"), decoder="auto")
    fresh, _, new = build_model(data, str(assets / "pre"), decoder="fresh")
    assert (kept, new) == ("pretrained", "fresh")
    for model in (auto, fresh):
        for a, b in zip(model.encoder.get_weights(), preset.encoder.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    pretrained_decoder = preset.decoder.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(auto.decoder.get_weights(), pretrained_decoder, strict=True))
    # the same architecture, other weights (kernels drawn anew; zero biases and unit gammas stay equal)
    assert [w.shape for w in fresh.decoder.get_weights()] == [w.shape for w in pretrained_decoder]
    kernels = [(a, b) for a, b in zip(fresh.decoder.get_weights(), pretrained_decoder) if a.ndim == 5]
    assert kernels and all(not np.allclose(a, b) for a, b in zip(*zip(*kernels)))
    # an encoder preset or scratch: always a fresh decoder, with either value
    assert build_model(data, "none", filters=(4, 8), decoder="fresh")[2] == "fresh"


# ------------------------------------------------------------------ through `finetune`: recorded, resumed, refused


def _finetune(assets, out, *extra):
    return ["finetune", "--data", str(assets / "brats"), "--out", str(out), "--size", "8", "--lr", "1e-3",
            "--val-fraction", "0.34", "--tensorboard", "none", "--verbose", "0", *extra]


def _config(run):
    return json.loads((run / "run.json").read_text())["config"]


def _one_line_error(capsys, code):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured
    return lines[0]


@pytest.mark.multibackend  # the scaled optimizer through a warm-up rebuild, a checkpoint and a resume
def test_finetune_records_the_options_and_refuses_a_resume_with_others(assets, tmp_path, capsys):
    run = tmp_path / "run"
    options = ["--encoder", str(assets / "pre"), "--encoder-lr-scale", "0.5", "--lr-warmup-epochs", "1",
               "--lr-schedule", "poly", "--decoder", "fresh", "--strategy", "warmup", "--warmup-epochs", "1",
               "--warmup-freezes", "pretrained"]
    assert run_cli(cli, _finetune(assets, run, *options, "--epochs", "2")) == 0
    config = _config(run)
    assert (config["encoder_lr_scale"], config["lr_warmup_epochs"], config["decoder"], config["warmup_freezes"]) \
        == (0.5, 1, "fresh", "pretrained")
    assert json.loads((run / "model" / "metadata.json").read_text())["decoder"] == "fresh"
    # the same settings resume (the scaled optimizer's state from the checkpoint) and train on
    assert run_cli(cli, _finetune(assets, run, *options, "--epochs", "3", "--resume")) == 0
    assert json.loads((run / "result.json").read_text())["selected_epoch"] in (1, 2, 3)
    assert len(json.loads((run / "result.json").read_text())["curve"]) == 3
    capsys.readouterr()
    for option, value, key in (("--encoder-lr-scale", "0.25", "encoder_lr_scale"),
                               ("--lr-warmup-epochs", "0", "lr_warmup_epochs"), ("--decoder", "auto", "decoder"),
                               ("--warmup-freezes", "encoder", "warmup_freezes")):
        changed = [*options]
        changed[changed.index(option) + 1] = value
        line = _one_line_error(capsys, run_cli(cli, _finetune(assets, run, *changed, "--epochs", "4", "--resume")))
        assert f"cannot resume with different settings ({key})" in line, line


def test_scratch_ignores_the_scale_and_an_older_run_json_resumes(assets, tmp_path, capsys):
    run = tmp_path / "run"
    scratch = ["--encoder", "none", "--filters", "4,8", "--strategy", "full"]
    assert run_cli(cli, _finetune(assets, run, *scratch, "--epochs", "1", "--encoder-lr-scale", "0.5")) == 0
    assert ("Encoder lr scale: --encoder-lr-scale 0.5 applies to a pretrained encoder; --encoder none trains every "
            "layer at --lr") in capsys.readouterr().out
    config = _config(run)
    # scratch at the scale 1 and no warm-up: recorded as runs made before these options were (without the keys)
    assert "encoder_lr_scale" not in config and "lr_warmup_epochs" not in config and config["decoder"] == "fresh"
    assert "warmup_freezes" not in config
    assert run_cli(cli, _finetune(assets, run, *scratch, "--epochs", "2", "--resume")) == 0
    assert len(json.loads((run / "result.json").read_text())["curve"]) == 2


@pytest.mark.parametrize("extra,message", [
    (["--lr-warmup-epochs", "2", "--epochs", "2"], "Error: --lr-warmup-epochs 2 is not less than --epochs 2: the "
     "learning rate would never reach --lr; use fewer warm-up epochs or more epochs"),
    (["--encoder-lr-scale", "0", "--epochs", "1"],
     "Error: Invalid value for '--encoder-lr-scale': 0.0 is not in the range x>0."),
    (["--encoder-lr-scale", "inf", "--epochs", "1"], "Error: --encoder-lr-scale must be a finite number > 0, got inf"),
    (["--lr-warmup-epochs", "-1", "--epochs", "1"],
     "Error: Invalid value for '--lr-warmup-epochs': -1 is not in the range x>=0."),
    (["--decoder", "old", "--epochs", "1"],
     "Error: Invalid value for '--decoder': 'old' is not one of 'auto', 'fresh'."),
    (["--warmup-freezes", "decoder", "--epochs", "1"],
     "Error: Invalid value for '--warmup-freezes': 'decoder' is not one of 'encoder', 'pretrained'."),
])
@pytest.mark.parametrize("command", ["finetune", "study"])
def test_bad_values_are_one_line_errors(command, extra, message, assets, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _finetune(assets, out, "--encoder", str(assets / "pre"), *extra) if command == "finetune" else [
        "study", "--data", str(assets / "brats"), "--encoders", str(assets / "pre"), "--out", str(out), *extra]
    line = _one_line_error(capsys, run_cli(cli, argv))
    assert line.startswith(message), line  # click adds " (see 'keras-ssl3d COMMAND --help')"
    assert _outputs(out) == [] and _leftovers(tmp_path) == []


def test_study_passes_the_options_to_every_run(assets, tmp_path, monkeypatch):
    import keras_ssl3d.finetune.study as study

    seen = {}

    def fake_run_study(data, encoders, fractions, repeats, settings, out, **kwargs):
        seen["settings"] = settings
        (tmp_path / "s").mkdir()
        (tmp_path / "s" / "summary.md").write_text("")
        return []

    monkeypatch.setattr(study, "run_study", fake_run_study)
    argv = ["study", "--data", str(assets / "brats"), "--encoders", str(assets / "pre"), "--out", str(tmp_path / "s"),
            "--size", "8", "--epochs", "3", "--encoder-lr-scale", "0.1", "--lr-warmup-epochs", "2",
            "--decoder", "fresh"]
    assert run_cli(cli, argv) == 0
    s = seen["settings"]
    assert (s.encoder_lr_scale, s.lr_warmup_epochs, s.decoder) == (0.1, 2, "fresh")
