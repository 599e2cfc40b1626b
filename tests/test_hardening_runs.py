"""Issue 22, training runs: a full disk, warm-up longer than the run, YAML bombs, task options out of range,
a broken backend or run.json, absurd encoder sizes, and the smaller run defects - each a one-line error
(exit status 2, no traceback, nothing left that blocks a rerun) or the corrected behaviour.

The disk-full cases run the installed command in a subprocess under ``ulimit -f`` (SIGXFSZ ignored, so a
write past the limit fails with EFBIG as on a full disk) and resume once the limit is lifted.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_cli_hardening import FILTERS, _finetune, _leftovers, _native_log, _pretrain, assets  # noqa: F401
from helpers import refused_in_one_line
from test_cli_hardening import Ctx

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli

# What a checkpoint of the tiny test encoders exceeds (KiB), while run.json, history.csv and config.yaml fit.
LIMIT_KIB = 100


def _context(assets, tmp_path):  # noqa: F811
    ctx = Ctx(data=tmp_path / "data", assets=assets, tmp=tmp_path, out=tmp_path / "out")
    shutil.copytree(assets / "clean", ctx.data)
    return ctx


def _executable():
    exe = shutil.which("keras-ssl3d")
    return [exe] if exe else [sys.executable, "-m", "keras_ssl3d.cli.main"]


def _run_limited(argv, limit_kib=None, env=None):
    """Run ``keras-ssl3d ARGV`` in a subprocess, under ``ulimit -f`` when ``limit_kib`` is given."""
    command = " ".join(f"'{a}'" for a in [*_executable(), *argv])
    if limit_kib is not None:
        command = f"ulimit -f {limit_kib}; trap '' XFSZ; exec {command}"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=environment, timeout=600)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not _native_log(line)]
    return proc, lines


def _assert_one_line(proc, lines, *patterns):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in proc.stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), lines[0]


def _latest(run):
    return (run / "checkpoints" / "latest").read_text().strip()


# -- 7: a full disk while writing a checkpoint --------------------------------------------------------------
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_full_disk_is_one_line_keeps_the_last_checkpoint_and_resumes(command, assets, tmp_path, capsys):  # noqa: F811
    ctx = _context(assets, tmp_path)
    base = _pretrain(ctx) if command == "pretrain" else _finetune(ctx)
    argv = [a if a != "1" or base[i - 1] != "--epochs" else "2" for i, a in enumerate(base)]  # --epochs 2
    # A first run that cannot write its first checkpoint: one line, and nothing that blocks a rerun.
    proc, lines = _run_limited(argv, LIMIT_KIB)
    weights = ctx.out / "checkpoints" / "epoch-0001" / "model.weights.h5"
    _assert_one_line(proc, lines, re.escape(str(weights)), r"the disk is full", r"File too large",
                     r"no checkpoint was saved yet")
    assert not ctx.out.exists() and _leftovers(tmp_path) == []
    # The same command with space: it is not refused. One epoch, then the limit is back for the second.
    one_epoch = [*argv, "--epochs", "1"]
    assert run_cli(cli, one_epoch) == 0, capsys.readouterr().err
    proc, lines = _run_limited([*argv, "--resume"], LIMIT_KIB)  # (run.json records pytest's command line)
    _assert_one_line(proc, lines, r"epoch-0002.*the disk is full",
                     rf"the checkpoint epoch-0001 is intact: continue with --resume {re.escape(str(ctx.out))}")
    assert _latest(ctx.out) == "epoch-0001" and _leftovers(tmp_path) == []
    # Space is back: --resume finishes the run; stdout is a pipe here, so one line per epoch, no progress bar.
    proc, _ = _run_limited([*argv, "--resume", *(["--verbose", "1"] if command == "finetune" else [])])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _latest(ctx.out) == "epoch-0002"
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout, proc.stdout[-500:]
    record = json.loads((ctx.out / "run.json").read_text())
    assert record["config"]["epochs"] == 2  # the --epochs of the resume, not the 1 it started with
    assert len((ctx.out / "history.csv").read_text().strip().splitlines()) == 3


def test_disk_full_reason_names_the_file_for_plain_writes(tmp_path, monkeypatch, capsys):
    import errno

    from keras_ssl3d.fileio import disk_full_reason, write_text_atomic

    assert disk_full_reason(OSError(errno.ENOSPC, "No space left on device")) == \
        "the disk is full (No space left on device)"
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    target = tmp_path / "history.csv"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as Python's write() raises it: no file name

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as raised:
        write_text_atomic(target, "x")
    assert raised.value.filename == str(target) and not list(tmp_path.iterdir())


# -- 8: a warm-up as long as the run ------------------------------------------------------------------------
def test_explicit_warmup_not_shorter_than_the_run_is_refused(assets, tmp_path, capsys):  # noqa: F811
    ctx = _context(assets, tmp_path)
    argv = [*_finetune(ctx, assets / "encoder"), "--epochs", "2", "--warmup-epochs", "2"]
    assert run_cli(cli, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["Error: --warmup-epochs 2 is not less than --epochs 2: the pretrained encoder would stay frozen "
                     "for the whole run; use fewer warm-up epochs, more epochs, or --strategy frozen"], lines
    assert not ctx.out.exists()


def test_default_warmup_is_scaled_to_a_short_run_and_the_saved_epoch_is_reported(assets, tmp_path, capsys):  # noqa: F811
    from keras_ssl3d.presets import load_preset

    ctx = _context(assets, tmp_path)
    argv = [*_finetune(ctx, assets / "encoder"), "--epochs", "2"]
    assert run_cli(cli, argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Warm-up: 0 epoch(s), a quarter of --epochs 2 (the paper's 25 would keep the pretrained encoder frozen" \
        in out, out
    result = json.loads((ctx.out / "result.json").read_text())
    assert result["config"]["warmup_epochs"] == 0
    epoch = result["selected_epoch"]
    score = result["curve"][epoch - 1]
    assert f"val_mean_dice = {score:.4f} at epoch {epoch} of 2 ({result['selection']})" in out, out
    # The encoder trained: its weights are no longer the pretrained ones.
    pretrained = load_preset(assets / "encoder")
    with warnings.catch_warnings(record=True) as caught:  # 12: no optimizer UserWarning on load
        warnings.simplefilter("always")
        tuned = load_preset(ctx.out / "model")
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
    assert any(not np.allclose(a, b) for a, b in zip(pretrained.get_weights(), tuned.encoder.get_weights()))


def test_study_table_shows_the_effective_warmup_and_the_fraction_used():
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study import _row, summary_markdown

    rows = []
    for label, strategy in (("scratch", "full"), ("cpc", "warmup")):
        result = {"task": "segmentation", "train_size": 1, "curve": [0.5, 0.6], "selected_epoch": 2,
                  "config": {"strategy": strategy, "warmup_epochs": 1, "epochs": 4},
                  "evaluation": {"mean_dice": 0.5}}
        rows.append(_row(label, label, 0.001, 0, result, 1.0, "run", pool_size=2))
    assert [r["warmup_epochs"] for r in rows] == [0, 1] and rows[0]["used_fraction"] == 0.5
    text = summary_markdown(rows, FinetuneSettings(epochs=4, warmup_epochs=1).resolved("segmentation"),
                            "segmentation")
    assert "| % labels | scratch (full, warm-up 0) | cpc (warmup, warm-up 1) |" in text, text
    assert "| 0.1 (used 50) | 0.5000 (n=1) | 0.5000 (n=1) |" in text, text


# -- 10, 11: one line instead of a traceback or all the memory ----------------------------------------------
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _config_bomb(ctx):
    bad = ctx.tmp / "settings.yaml"
    bad.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    return [*_pretrain(ctx), "--config", str(bad)], bad


def _task_option(task, option):
    def case(ctx):
        argv = _pretrain(ctx)
        argv[argv.index("rotation")] = task
        return [*argv, "--task-option", option], f"--task-option {option.split('=')[0]}"

    case.__name__ = f"task_option[{option}]"
    return case


def _truncated_run_json(ctx):
    assert run_cli(cli, _pretrain(ctx)) == 0
    record = ctx.out / "run.json"
    record.write_text(record.read_text()[:50])
    return [*_pretrain(ctx), "--resume"], record


def _filters_typo(ctx):
    argv = _pretrain(ctx)
    argv[argv.index(FILTERS)] = "8,16,100000"
    return argv, "--filters 8,16,100000"


def _filters_typo_finetune(ctx):
    argv = _finetune(ctx)
    argv[argv.index(FILTERS)] = "8,16,100000"
    return argv, "--filters 8,16,100000"


CASES = [
    (_config_bomb, r"YAML anchors and aliases \(&name, \*name\) are not allowed in a config file"),
    (_task_option("simclr", "temperature=0"), r"simclr's temperature must be a number > 0"),
    (_task_option("genesis", "paint_p=5"), r"genesis's paint_p must be a probability in \[0, 1\]"),
    (_task_option("jigsaw", "grid=1"), r"jigsaw's grid must be an integer >= 2"),
    (_task_option("cpc", "jitter=-1"), r"cpc's jitter must be an integer >= 0"),
    (_task_option("mae", "mask_ratio=1"), r"mae's mask_ratio must be a number in \(0, 1\)"),
    (_task_option("simclr", "hidden_units=0.5"), r"simclr's hidden_units must be an integer >= 1"),
    (_task_option("rotation", "hidden_units=&a 3"), r"anchors and aliases"),
    (_truncated_run_json, r"cannot resume: run.json is truncated or corrupt"),
    (_filters_typo, r"needs at least 1006.0 GiB .* more than this machine's .* of memory: check --filters"),
    (_filters_typo_finetune, r"more than this machine's .* of memory: check --filters and --size for a typo"),
]


@pytest.mark.parametrize("make_case,message", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_run_input_is_one_line(make_case, message, assets, tmp_path, capsys):  # noqa: F811
    ctx = _context(assets, tmp_path)
    argv, named = make_case(ctx)
    line = refused_in_one_line(argv, capsys, named)
    assert re.search(message, line), line
    assert _leftovers(tmp_path, assets) == []


def test_unknown_backend_is_one_line():
    proc, lines = _run_limited(["info"], env={"KERAS_BACKEND": "foo"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines == ["Error: KERAS_BACKEND=foo: not a Keras backend; use tensorflow, jax or torch"], lines


def test_size_estimates():
    from keras_ssl3d.training.budget import cache_warning, check_encoder_fits, encoder_parameters

    exact = Encoder3D(in_channels=4, filters=(4, 8)).count_params()
    assert 0.9 * exact <= encoder_parameters((4, 8), 4) <= exact  # a lower bound, close
    assert cache_warning(1024, 4) == ("--size 1024: every subject takes 4.0 GiB per channel (16.0 GiB for 4 "
                                      "channels) in the cache on disk and in memory while it is read; 128 is the "
                                      "paper's size")
    assert cache_warning(128) is None
    check_encoder_fits((32, 64, 128, 256, 512), 128, 2, available=8 * 2**30)  # the paper's encoder fits 8 GiB
    with pytest.raises(Exception, match=r"--size 1024 \(batch 2\) needs at least 256.1 GiB"):
        check_encoder_fits((32, 64, 128, 256, 512), 1024, 2, available=64 * 2**30)


# -- 12: smaller ones -----------------------------------------------------------------------------------------
def test_preset_whose_config_and_weights_disagree_says_why(tmp_path):
    from keras_ssl3d.errors import PresetError
    from keras_ssl3d.presets import load_preset

    Encoder3D(in_channels=4, filters=(4, 8)).save_pretrained(tmp_path / "a")
    Encoder3D(in_channels=4, filters=(4, 8, 16)).save_pretrained(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "config.json", tmp_path / "a" / "config.json")
    with pytest.raises(PresetError) as raised:
        load_preset(tmp_path / "a")
    message = str(raised.value)
    assert "\n" not in message and not message.rstrip(")").endswith(":"), message
    assert re.search(r"could not be loaded\. Example error message for object <\w+ name=\w+, built=True>: "
                     r"Layer '\w+' expected \d+ variables", message), message


def test_python_api_import_hides_tensorflow_startup_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import os, keras_ssl3d, keras; keras.ops.ones(2); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"
    assert not [line for line in proc.stderr.splitlines() if _native_log(line) or "cuInit" in line], proc.stderr
    # A level the user chose is kept.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="1"), timeout=300)
    assert proc.stdout.strip() == "1", proc.stderr
