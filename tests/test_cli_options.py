"""Every numeric option of every command has a range, and one option name has one range everywhere."""

import click
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import COMMANDS, cli


def _leaf_commands():
    ctx = click.Context(cli)
    stack = [((name,), cli.get_command(ctx, name)) for name in COMMANDS]
    while stack:
        path, command = stack.pop()
        if isinstance(command, click.Group):
            stack += [((*path, name), sub) for name, sub in command.commands.items()]
        else:
            yield " ".join(path), command


def _numeric_params():
    for path, command in _leaf_commands():
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                yield path, param


def test_every_numeric_option_has_a_range_and_the_same_one_everywhere():
    params = list(_numeric_params())
    assert len(params) >= 30  # the walk sees every command (preprocess ... demo, zoo build)
    ranges = {}
    for path, param in params:
        assert isinstance(param.type, click.types._NumberRangeBase), f"{path} {param.opts[0]} has no range"
        assert param.type.min is not None or param.type.max is not None, f"{path} {param.opts[0]}"
        rng = (type(param.type), param.type.min, param.type.max, param.type.min_open, param.type.max_open)
        ranges.setdefault(param.opts[0], {})[path] = rng
    differing = {name: by for name, by in ranges.items() if len(set(by.values())) > 1}
    assert not differing, differing
    assert {"--size", "--epochs", "--batch-size", "--lr", "--seed"} <= set(ranges)


@pytest.mark.parametrize("argv,named", [
    (["finetune", "--data", ".", "--encoder", "none", "--size", "0"], "'--size'"),
    (["finetune", "--data", ".", "--encoder", "none", "--size", "-5"], "'--size'"),
    (["pretrain", "--task", "rotation", "--data", ".", "--size", "4"], "'--size'"),
    (["study", "--data", ".", "--encoders", "none", "--out", "x", "--size", "0"], "'--size'"),
    (["preprocess", ".", "out", "--size", "2000"], "'--size'"),
    (["finetune", "--data", ".", "--encoder", "none", "--lr", "0"], "'--lr'"),
    (["finetune", "--data", ".", "--encoder", "none", "--label-fraction", "1.5"], "'--label-fraction'"),
    (["finetune", "--data", ".", "--encoder", "none", "--val-fraction", "1"], "'--val-fraction'"),
    (["predict", "--model", ".", "x.nii.gz", "--out", "o", "--batch-size", "0"], "'--batch-size'"),
    (["evaluate", "--model", ".", "--data", ".", "--batch-size", "0"], "'--batch-size'"),
    (["demo", "--seed", "-1"], "'--seed'"),
    (["finetune", "--data", ".", "--encoder", "none", "--checkpoint-every", "0"], "'--checkpoint-every'"),
    (["finetune", "--data", ".", "--encoder", "none", "--checkpoint-seconds", "-1"], "'--checkpoint-seconds'"),
])
def test_out_of_range_values_are_one_line_usage_errors(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(cli, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and named in err and "range" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, so nothing blocks a rerun


@pytest.mark.parametrize("command", [["predict", "--model", ".", "x.nii.gz", "--out", "o"],
                                     ["evaluate", "--model", ".", "--data", "."]])
def test_there_is_no_overlap_option_that_would_do_nothing(command, tmp_path, monkeypatch, capsys):
    # predict/evaluate resize every scan to the model's input grid: one window, so no overlap to choose.
    monkeypatch.chdir(tmp_path)
    assert run_cli(cli, [*command, "--overlap", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "No such option '--overlap'" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_task_names_are_the_registry():
    from keras_ssl3d.names import TASK_NAMES
    from keras_ssl3d.tasks import TASKS

    assert TASK_NAMES == tuple(TASKS)


def test_the_cli_precisions_are_the_library_ones():
    from keras_ssl3d.cli.options import PRECISIONS
    from keras_ssl3d.training import precision

    assert PRECISIONS == precision.PRECISIONS


def test_the_cli_augmentations_are_the_library_ones():
    from keras_ssl3d.cli.options import AUGMENTATIONS
    from keras_ssl3d.finetune import augment

    assert AUGMENTATIONS == augment.AUGMENTATIONS
