"""The CLI is quiet and quick: --help/--version/zoo list never import TensorFlow, and TensorFlow's native
start-up lines are filtered out of a command's stderr unless --verbose."""

import os
import subprocess
import sys

import pytest

from keras_ssl3d.cli.runtime import native_logs_filtered, quiet_wanted

LAUNCHER = """import atexit, sys
atexit.register(lambda: print("IMPORTED:" + ",".join(m for m in ("tensorflow", "keras", "jax", "torch")
                                                   if m in sys.modules), file=sys.stderr))
from keras_ssl3d.cli.main import main
sys.exit(main())
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["zoo", "list"], ["pretrain", "--help"]])
def test_light_commands_do_not_import_a_backend(argv, tmp_path):
    script = tmp_path / "keras-ssl3d"  # the console script's name: the package then imports lazily
    script.write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == ["IMPORTED:"], proc.stderr
    assert proc.stdout.strip()


def test_native_lines_are_dropped_and_others_kept(capfd):
    with native_logs_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796239974.521372    3900 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796239974.5 3900 cuda_executor.cc:1] failed call to cuInit: CUDA error\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild\n")
        os.write(2, b"UserWarning: something the user should see\n")
    assert capfd.readouterr().err == "UserWarning: something the user should see\n"


def test_verbose_or_a_user_level_of_zero_keeps_the_logs(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert quiet_wanted() and not quiet_wanted(verbose=True)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert not quiet_wanted()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    assert quiet_wanted()


def test_a_command_that_starts_tensorflow_prints_no_native_log_line(tmp_path):
    # pretrain starts Keras/TensorFlow before it reads its data: here an empty folder, a quick user error.
    script = tmp_path / "keras-ssl3d"
    script.write_text(LAUNCHER)
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_SSL3D_VERBOSE")}
    env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run([sys.executable, str(script), "pretrain", "--task", "rotation", "--data",
                           str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--size", "8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and str(tmp_path / "empty") in lines[0], lines
    assert lines[1].startswith("IMPORTED:tensorflow,keras"), lines
