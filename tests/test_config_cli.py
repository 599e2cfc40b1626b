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


def _event_scalars(folder):
    """``{tag: [values per step]}`` of the TensorBoard event files under ``folder``."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(folder.glob("*.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_tensorboard_logs_hold_the_epoch_scalars(volumes, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--task", "rotation", "--data", str(volumes), "--out", str(run), *TINY, "--epochs", "2",
            "--val-fraction", "0.34"]
    assert run_cli(cli, args=args) == 0
    history = (run / "history.csv").read_text().strip().splitlines()
    columns = history[0].split(",")
    last = dict(zip(columns, history[-1].split(",")))
    train = _event_scalars(run / "tensorboard" / "train")
    val = _event_scalars(run / "tensorboard" / "validation")
    assert [step for step, _ in train["epoch_loss"]] == [0, 1]
    assert train["epoch_loss"][-1][1] == pytest.approx(float(last["loss"]), rel=1e-5)
    assert val["epoch_loss"][-1][1] == pytest.approx(float(last["val_loss"]), rel=1e-5)


def test_run_config_yaml_reproduces_the_run_and_the_command_line_wins(volumes, tmp_path, capsys):
    import yaml

    first = tmp_path / "first"
    assert run_cli(cli, args=["pretrain", "--task", "rotation", "--data", str(volumes), "--out", str(first), *TINY,
                              "--lr", "0.002", "--norm", "group", "--task-option", "hidden_units=8",
                              "--tensorboard", "none"]) == 0
    written = yaml.safe_load((first / "config.yaml").read_text())
    assert written["task"] == "rotation" and written["task_option"] == ["hidden_units=8"]
    assert "out" not in written and "resume" not in written and "config" not in written

    again = tmp_path / "again"
    assert run_cli(cli, args=["pretrain", "--config", str(first / "config.yaml"), "--out", str(again)]) == 0
    assert _recorded(again)[0] == _recorded(first)[0]  # run.json: every hyper-parameter and the data
    assert (again / "config.yaml").read_text() == (first / "config.yaml").read_text()
    assert not (again / "tensorboard").exists()  # --tensorboard none, from the file

    # a hand-written file: dashes or underscores, task options as a mapping; the command line wins
    # (resolved by click without training: the same options as the first run's)
    from keras_ssl3d.cli.config_file import resolved_config
    from keras_ssl3d.cli.pretrain import pretrain

    mine = tmp_path / "mine.yaml"
    mine.write_text(f"task: rotation\ndata: {volumes}\ndims: 3\nepochs: 5\nbatch-size: 2\nsize: 16\n"
                    "filters: 4,8\nseed: 1\nlr: 0.002\nnorm: group\ntask_option: {hidden_units: 8}\n"
                    "tensorboard: none\n")
    ctx = pretrain.make_context("pretrain", ["--config", str(mine), "--out", "x", "--epochs", "1"])
    assert yaml.safe_load(resolved_config(ctx)) == written


@pytest.mark.parametrize("text, message", [
    ("task: cpc\nepoch: 3\n", "mine.yaml: unknown option 'epoch' for `pretrain`"),
    ("resume: somewhere\n", "unknown option 'resume'"),
    ("- task\n", "mine.yaml: a config file is a YAML mapping"),
    ("task: [cpc\n", "mine.yaml: not a valid YAML file"),
    ("epochs: [1, 2]\n", "option 'epochs' takes one value"),
    ("task: cpc\nepochs: 0\n", "--epochs"),  # the option's own range still applies
])
def test_bad_config_file_is_one_line(volumes, tmp_path, capsys, text, message):
    mine = tmp_path / "mine.yaml"
    mine.write_text(text)
    run = tmp_path / "run"
    assert run_cli(cli, args=["pretrain", "--config", str(mine), "--data", str(volumes), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not run.exists()


@pytest.mark.parametrize("name", ["brats-cpc", "brats-exemplar", "demo-brats-jigsaw", "retina-rpl"])
def test_zoo_recipe_as_pretrain_config_is_what_zoo_build_trains(name, volumes, tmp_path, capsys):
    """The options `pretrain --config` resolves from `zoo recipe NAME` build the task, encoder and
    optimiser settings that `zoo build NAME` builds (compared without training). demo-brats-jigsaw sets
    num_permutations=1000 and filters 8,16,32, which differ from pretrain's defaults."""
    from keras_ssl3d.cli.pretrain import pretrain
    from keras_ssl3d.tasks.runner import build_task
    from keras_ssl3d.cli.task_options import parse_task_options
    from keras_ssl3d.finetune.parsing import parse_int_list
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.zoo import build
    from keras_ssl3d.presets.catalogue import get_entry

    assert run_cli(cli, args=["zoo", "recipe", name]) == 0
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(capsys.readouterr().out)
    ctx = pretrain.make_context("pretrain", ["--config", str(recipe_file), "--data", str(volumes), "--out", "x"])
    p = ctx.params
    entry = get_entry(name)
    assert p["lr"] == entry.recipe["learning_rate"] and p["seed"] == 0
    assert p["epochs"] == (entry.recipe.get("epochs") or build.DEFAULT_EPOCHS)
    assert p["batch_size"] == (entry.recipe.get("batch_size") or build.DEFAULT_BATCH_SIZE[entry.rank])
    assert p["size"] == entry.recipe["input_size"][0] and int(p["dims"]) == entry.rank

    in_channels = entry.input_contract["in_channels"]
    ours = build_task(p["task"], int(p["dims"]), in_channels, p["size"],
                      filters=parse_int_list(p["filters"], "--filters") if entry.rank == 3 else None,
                      blocks=parse_int_list(p["blocks"], "--blocks") if entry.rank == 2 else None, norm=p["norm"],
                      task_options=parse_task_options(p["task_option"], p["task"], TASKS[p["task"]]))
    recipe = build.recipe_settings(entry, epochs=1, batch_size=2, input_size=p["size"]).resolved()
    theirs = build_task(recipe.task, recipe.dims, in_channels, recipe.size, encoder=recipe.encoder,
                        task_options=recipe.task_options)

    def settings(model):
        return {k: v for k, v in model.get_config().items() if k not in ("encoder", "name", "trainable")}

    def arch(encoder):
        return {k: v for k, v in encoder.get_config().items() if k not in ("name", "channel_names", "trainable")}

    assert type(ours) is type(theirs) and settings(ours) == settings(theirs)
    assert arch(ours.encoder) == arch(theirs.encoder)
    for key, value in entry.recipe.get("task_hparams", {}).items():
        assert settings(ours)[key] == value


def test_finetune_config_yaml_reproduces_the_run_and_logs_tensorboard(tmp_path):
    from keras_ssl3d.data.synthetic import make_brats_like

    make_brats_like(tmp_path / "brats", n_subjects=3, shape=(16, 16, 16), seed=0)
    first = tmp_path / "first"
    assert run_cli(cli, ["finetune", "--data", str(tmp_path / "brats"), "--encoder", "none", "--filters", "4,8",
                         "--size", "16", "--out", str(first), "--epochs", "1", "--strategy", "full",
                         "--val-fraction", "0.34", "--lr", "0.002", "--verbose", "0"]) == 0
    assert (first / "tensorboard" / "train").is_dir() and (first / "tensorboard" / "validation").is_dir()
    assert "epoch_mean_dice" in _event_scalars(first / "tensorboard" / "validation")
    again = tmp_path / "again"
    assert run_cli(cli, ["finetune", "--config", str(first / "config.yaml"), "--out", str(again)]) == 0
    recorded = [json.loads((run / "run.json").read_text())["config"] for run in (first, again)]
    assert recorded[0] == recorded[1] and recorded[0]["lr"] == 0.002


def test_every_task_setting_is_recorded_in_the_task_config():
    """Each `--task-option` name of each task is in the task's get_config (what run.json and the preset
    metadata record as task_config), and a set value comes back from it."""
    from keras_ssl3d.tasks.runner import build_task
    from keras_ssl3d.cli.task_options import parse_task_options, settable
    from keras_ssl3d.tasks import TASKS

    for name, cls in TASKS.items():
        names = settable(cls)
        assert names, name
        model = build_task(name, 3, 1, 32, filters=(4, 8))
        assert set(names) <= set(model.get_config()), (name, set(names) - set(model.get_config()))
        if "hidden_units" in names:  # one set value, through the same parser the CLI uses
            model = build_task(name, 3, 1, 32, filters=(4, 8),
                               task_options=parse_task_options(["hidden_units=24"], name, cls))
            assert model.get_config()["hidden_units"] == 24, name
