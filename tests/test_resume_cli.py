"""Killed and interrupted `keras-ssl3d pretrain` / `finetune` runs resume and finish (real subprocesses).

A per-batch delay (KERAS_SSL3D_TEST_BATCH_DELAY, read by TrainingRun) makes "during epoch 2"
reliable on any machine: each epoch has 4 batches, so it lasts well over a second.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.training.checkpoint import latest_checkpoint

CLI = [sys.executable, "-m", "keras_ssl3d.cli.main"]
DELAY = "0.4"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_brats_like(tmp_path_factory.mktemp("data"), n_subjects=4, shape=(14, 14, 12), seed=0)


def _env(delay=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("KERAS_SSL3D_TEST_BATCH_DELAY", None)
    if delay:
        env["KERAS_SSL3D_TEST_BATCH_DELAY"] = delay
    return env


def _pretrain_args(data_dir, run_dir):
    return ["pretrain", "--task", "rotation", "--data", str(data_dir), "--out", str(run_dir), "--epochs", "3",
            "--batch-size", "1", "--size", "16", "--filters", "4,8", "--seed", "1"]


def _finetune_args(data_dir, run_dir):
    return ["finetune", "--data", str(data_dir), "--encoder", "none", "--out", str(run_dir), "--epochs", "3",
            "--batch-size", "1", "--size", "16", "--filters", "4,8", "--val-fraction", "0", "--strategy", "full",
            "--lr", "1e-3", "--seed", "1", "--verbose", "0"]


def _latest_name(run_dir):
    pointer = run_dir / "checkpoints" / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def _start_and_signal(args, run_dir, sig):
    """Start the command, wait until epoch 1 is checkpointed, send ``sig`` inside epoch 2."""
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(DELAY))
    start = time.time()
    while _latest_name(run_dir) != "epoch-0001":
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited early ({proc.returncode}): {out}\n{err}")
        if time.time() - start > 240:
            proc.kill()
            raise AssertionError("epoch 1 was never checkpointed")
        time.sleep(0.05)
    time.sleep(0.5)  # one or two batches into epoch 2 (each batch sleeps 0.4 s)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def _history(run_dir):
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    return [dict(zip(header, map(float, r.split(",")))) for r in rows[1:]]


def _finished(run_dir):
    latest = latest_checkpoint(run_dir)
    assert latest.name == "epoch-0003"
    state = json.loads((latest / "state.json").read_text())
    assert state["epoch"] == 3 and not state.get("partial")
    history = _history(run_dir)
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in history)
    return history


def _run(args, **kw):
    return subprocess.run(CLI + args, capture_output=True, text=True, env=_env(), timeout=400, **kw)


def _encoder_weights(folder):
    from keras_ssl3d.presets import load_preset

    return [np.asarray(w) for w in load_preset(folder).get_weights()]


def test_pretrain_killed_in_epoch_2_resumes_to_the_uninterrupted_result(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _start_and_signal(_pretrain_args(data_dir, run_dir), run_dir, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert _latest_name(run_dir) == "epoch-0001"  # killed during epoch 2: epoch 1 is all that is saved
    assert not (run_dir / "encoder").exists()

    # `--resume RUN_DIR` alone: the other options come from run.json.
    done = _run(["pretrain", "--resume", str(run_dir)])
    assert done.returncode == 0, done.stdout + done.stderr
    _finished(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert len(record["resumed"]) == 1 and "--resume" in record["resumed"][0]["command"]
    resumed = _encoder_weights(run_dir / "encoder")

    straight_dir = tmp_path / "straight"
    straight = _run(_pretrain_args(data_dir, straight_dir))
    assert straight.returncode == 0, straight.stdout + straight.stderr
    # Same batches, same augmentations, same optimizer state: the same weights as a run never killed.
    for a, b in zip(_encoder_weights(straight_dir / "encoder"), resumed):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_pretrain_ctrl_c_saves_a_usable_checkpoint_and_resumes(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _start_and_signal(_pretrain_args(data_dir, run_dir), run_dir, signal.SIGINT)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Interrupted: training interrupted; checkpoint saved in") and "--resume" in last, err
    assert "Traceback" not in err
    latest = latest_checkpoint(run_dir)
    assert latest.name == "epoch-0001-partial"
    state = json.loads((latest / "state.json").read_text())
    assert state["partial"] and state["epoch"] == 1  # epoch 2 (index 1) is redone on resume
    assert (latest / "model.weights.h5").stat().st_size > 0 and (latest / "optimizer.h5").is_file()

    done = _run(_pretrain_args(data_dir, run_dir) + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    _finished(run_dir)
    assert (run_dir / "encoder" / "metadata.json").is_file()


def test_finetune_killed_in_epoch_2_resumes(data_dir, tmp_path):
    run_dir = tmp_path / "ft"
    code, _, err = _start_and_signal(_finetune_args(data_dir, run_dir), run_dir, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert _latest_name(run_dir) == "epoch-0001"
    assert not (run_dir / "model").exists()
    done = _run(["finetune", "--resume", str(run_dir)])
    assert done.returncode == 0, done.stdout + done.stderr
    _finished(run_dir)
    assert (run_dir / "model" / "metadata.json").is_file()
    assert json.loads((run_dir / "result.json").read_text())["train_size"] == 4


def test_resume_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run(["pretrain", "--resume", str(empty)])
    lines = [line for line in r.stderr.splitlines() if line.strip() and not _native_log(line)]
    assert r.returncode == 2 and lines == [f"Error: {empty}: nothing to resume: no run.json in the run directory"]


def _native_log(line):
    """TensorFlow's C++ start-up lines (absl), printed before Python runs and not ours to silence."""
    import re

    return bool(re.match(r"^[IWE]\d{4} |^WARNING: All log messages before absl|^To enable the following", line))
