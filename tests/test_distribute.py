"""Data-parallel training on 2 logical CPU devices (tf.distribute on TensorFlow, DataParallel on JAX).

The multi-device checks run in child processes (tests/multidevice.py): the logical devices must be
made before the backend starts, and this suite's process already runs on one device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_ssl3d import distribute
from keras_ssl3d.errors import ConfigError

HERE = Path(__file__).resolve().parent
TASKS = ("rotation", "rpl", "jigsaw", "cpc", "exemplar")
# float32 rounding of the same sums in another order; the updates themselves are 1e-3 .. 3e-2.
TOLERANCE = 1e-6

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="starts its own TensorFlow and JAX processes")


def _run(backend, *args, timeout=900):
    env = dict(os.environ, KERAS_BACKEND=backend, KERAS_SSL3D_CPU_DEVICES="2", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    if backend == "jax":  # as tests/run.sh: tiny models compile ~3x faster without LLVM's optimisations
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    proc = subprocess.run([sys.executable, str(HERE / "multidevice.py"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(HERE.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_one_step_on_two_replicas_equals_one_step_on_the_whole_batch(backend):
    rows = {r["task"]: r for r in _run(backend, "step", *TASKS)}
    assert sorted(rows) == sorted(TASKS)
    for task, r in rows.items():
        assert r["replicas"] == 2 and r["strategy"] == ("mirrored" if backend == "tensorflow" else "data-parallel")
        assert r["max_update"] > 1e-4, r  # the step did change the weights
        if backend == "tensorflow" and "halves" in r["max_diff"]:
            # In-batch negatives are per replica under tf.distribute: the step equals the mean of the
            # two half-batch steps, and measurably differs from the whole-batch step.
            assert r["max_diff"]["halves"] < TOLERANCE, r
            assert r["max_diff"]["full"] > 10 * TOLERANCE, r
        else:  # JAX shards one global computation: negatives and all are global
            assert r["max_diff"]["full"] < TOLERANCE, r
    assert "halves" in rows["cpc"]["max_diff"]  # CPC's InfoNCE keys are every patch of the batch
    assert "halves" in rows["exemplar"]["max_diff"]  # exemplar's negative is another sample's positive


def test_pretrain_and_finetune_cli_run_and_resume_mirrored(tmp_path):
    pre_1, pre_2, fine_1, fine_2 = _run("tensorflow", "cli", str(tmp_path))
    for row in (pre_1, pre_2, fine_1, fine_2):
        assert row["code"] == 0, row
        assert row["distribution"] == {"strategy": "mirrored", "replicas": 2, "workers": 1,
                                       "devices": ["/device:CPU:0", "/device:CPU:1"], "per_device_batch": 1,
                                       "global_batch": 2}
    assert (pre_1["epochs_done"], pre_2["epochs_done"], pre_2["resumed"]) == (1, 2, 1)  # resumed on 1 device
    assert (fine_1["epochs_done"], fine_2["epochs_done"], fine_2["resumed"]) == (1, 2, 1)
    from keras_ssl3d import Encoder3D

    assert Encoder3D.from_pretrained(tmp_path / "pre" / "encoder").filters == (4, 8)


def test_two_jax_processes_on_localhost_train_and_only_the_first_writes(tmp_path):
    import socket

    from keras_ssl3d import Encoder3D
    from keras_ssl3d.data import preprocess_dataset
    from keras_ssl3d.data.synthetic import make_brats_like

    src = make_brats_like(tmp_path / "brats", n_subjects=4, shape=(18, 18, 16), seed=0)
    preprocess_dataset(src, tmp_path / "cache", size=16, crop_foreground=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    procs = []
    for rank in range(2):
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch),
                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                   KERAS_DISTRIBUTION_PROCESS_ID=str(rank),
                   XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
        cmd = [sys.executable, "-m", "keras_ssl3d.cli.main", "pretrain", "--task", "rotation", "--data",
               str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--size", "16", "--filters", "4,8",
               "--norm", "group", "--batch-size", "1", "--epochs", "2", "--distribute", "multi-worker"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        finally:
            proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["distribution"]["workers"] == 2 and record["config"]["distribution"]["replicas"] == 2
    assert len((tmp_path / "run" / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert "Saved the pretrained encoder" in outputs[0] and "Saved the pretrained encoder" not in outputs[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brats", "cache", "run", "tmp"]
    assert not any(scratch.iterdir())  # the other process's scratch run folder is gone
    assert Encoder3D.from_pretrained(tmp_path / "run" / "encoder").filters == (4, 8)


def test_plans_and_their_errors(monkeypatch):
    assert distribute.plan("none").replicas == 1
    assert distribute.plan("auto").kind == "none"  # one CPU, no accelerator
    assert distribute.DistributionPlan("mirrored", ["a", "b"], 2).global_batch(3) == 6
    with pytest.raises(ConfigError, match="only 1 device"):
        distribute.plan("mirrored", devices=2)
    with pytest.raises(ConfigError, match="--devices must be a positive integer"):
        distribute.plan("mirrored", devices="two")
    with pytest.raises(ConfigError, match="keras-team/keras#20585"):
        distribute.plan("multi-worker")  # TensorFlow: refused in one line (see keras_ssl3d.distribute)
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    monkeypatch.setattr(distribute, "local_devices", lambda: ([], ["cpu:0", "cpu:1"]))
    with pytest.raises(ConfigError, match="not supported on the PyTorch backend"):
        distribute.plan("mirrored")
    monkeypatch.setenv(distribute.CPU_DEVICES_ENV, "zero")
    with pytest.raises(ConfigError, match="must be a positive integer"):
        distribute.cpu_device_count()


def test_the_cli_says_torch_is_not_supported_in_one_line(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_ssl3d.cli.main", "pretrain", "--task", "rotation",
                           "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--distribute", "mirrored"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "not supported on the PyTorch backend" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing left that blocks a rerun
