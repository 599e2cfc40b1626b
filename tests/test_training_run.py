import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_ssl3d.errors import RunError
from keras_ssl3d.training import TrainingRun
from keras_ssl3d.training.checkpoint import latest_checkpoint


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]
    return x, y


@pytest.mark.multibackend
def test_fit_writes_record_checkpoints_and_history(tmp_path):
    x, y = _data()
    run = TrainingRun(tmp_path / "run", config={"lr": 0.01}, seed=3, command=["prog", "--x"])
    history = run.fit(_model(), x, y=y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["command"] == ["prog", "--x"]
    assert record["config"] == {"lr": 0.01}
    assert record["versions"]["backend"] == keras.backend.backend()
    assert len(history.history["loss"]) == 2
    assert history.history["loss"][1] < history.history["loss"][0]
    assert latest_checkpoint(tmp_path / "run").name == "epoch-0002"
    rows = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch") and len(rows) == 3


@pytest.mark.multibackend
def test_existing_run_is_not_overwritten(tmp_path):
    x, y = _data()
    TrainingRun(tmp_path / "run").fit(_model(), x, y=y, epochs=1, verbose=0)
    with pytest.raises(RunError, match="already holds a run"):
        TrainingRun(tmp_path / "run")
    with pytest.raises(RunError, match="nothing to resume"):
        TrainingRun(tmp_path / "other", resume=True)


@pytest.mark.multibackend
def test_a_run_failing_before_its_first_checkpoint_leaves_nothing_that_blocks_a_rerun(tmp_path):
    x, y = _data()

    class Boom(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise ValueError("bad input shape")

    with pytest.raises(ValueError, match="bad input shape"):
        TrainingRun(tmp_path / "run").fit(_model(), x, y=y, epochs=2, callbacks=[Boom()], verbose=0)
    assert not (tmp_path / "run").exists()
    with pytest.raises(RunError, match="nothing to resume"):
        TrainingRun(tmp_path / "run", resume=True)
    (tmp_path / "kept").mkdir()  # a folder the user made stays; only what the run wrote goes
    with pytest.raises(ValueError):
        TrainingRun(tmp_path / "kept").fit(_model(), x, y=y, epochs=1, callbacks=[Boom()], verbose=0)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())
    history = TrainingRun(tmp_path / "run").fit(_model(), x, y=y, epochs=1, verbose=0)  # the rerun goes ahead
    assert len(history.history["loss"]) == 1


@pytest.mark.multibackend
def test_resumed_run_matches_uninterrupted_run(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(1)
    straight = _model()
    TrainingRun(tmp_path / "a").fit(straight, x, y=y, epochs=4, batch_size=8, shuffle=False, verbose=0)

    keras.utils.set_random_seed(1)
    first = _model()
    TrainingRun(tmp_path / "b").fit(first, x, y=y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    keras.utils.set_random_seed(99)  # a fresh process: different initial weights
    resumed = _model()
    history = TrainingRun(tmp_path / "b", resume=True).fit(resumed, x, y=y, epochs=4, batch_size=8,
                                                         shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert len(record["resumed"]) == 1


@pytest.mark.multibackend
def test_checkpoint_interval_keeps_history_and_resumes_exactly(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(1)
    straight = _model()
    TrainingRun(tmp_path / "a").fit(straight, x, y=y, epochs=5, batch_size=8, shuffle=False, verbose=0)

    class Crash(keras.callbacks.Callback):  # dies at the start of epoch 5, after 4 done
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                raise RuntimeError("power cut")

    keras.utils.set_random_seed(1)
    with pytest.raises(RuntimeError, match="power cut"):
        TrainingRun(tmp_path / "b", checkpoint_every=3).fit(_model(), x, y=y, epochs=5, batch_size=8,
                                                            shuffle=False, callbacks=[Crash()], verbose=0)
    saved = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("epoch-*"))
    assert saved == ["epoch-0003"]  # epochs 1, 2 and 4 wrote no checkpoint
    rows = (tmp_path / "b" / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # but every epoch is in the history

    keras.utils.set_random_seed(99)
    resumed = _model()
    history = TrainingRun(tmp_path / "b", resume=True, checkpoint_every=3).fit(
        resumed, x, y=y, epochs=5, batch_size=8, shuffle=False, verbose=0)
    assert history.epoch == [0, 1, 2, 3, 4]
    assert latest_checkpoint(tmp_path / "b").name == "epoch-0005"  # the last epoch always saves
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    rows = (tmp_path / "b" / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 6


def test_checkpoint_seconds_spaces_checkpoints_in_time(tmp_path, monkeypatch):
    from keras_ssl3d.training import run as run_module

    clock = iter(range(0, 1000, 10))  # every reading of the clock is 10 s later
    monkeypatch.setattr(run_module, "_clock", lambda: float(next(clock)))
    x, y = _data()
    saves = []
    real_save = run_module.ckpt.save_checkpoint
    monkeypatch.setattr(run_module.ckpt, "save_checkpoint",
                        lambda model, run_dir, state, keep: saves.append(state["epoch"]) or
                        real_save(model, run_dir, state, keep=keep))
    TrainingRun(tmp_path / "run", checkpoint_seconds=25).fit(_model(), x, y=y, epochs=6, batch_size=8, verbose=0)
    # clock readings: 0 (set up), 10 (train begins), epoch ends 20, 30, 40 (40 - 10 >= 25: save, at 50),
    # 60, 70; the last epoch always saves
    assert saves == [3, 6]
    with pytest.raises(RunError, match="checkpoint_every"):
        TrainingRun(tmp_path / "bad", checkpoint_every=0)


@pytest.mark.multibackend
def test_resume_refuses_changed_settings(tmp_path):
    x, y = _data()
    TrainingRun(tmp_path / "run", config={"lr": 0.1}).fit(_model(), x, y=y, epochs=1, verbose=0)
    with pytest.raises(RunError, match="lr"):
        TrainingRun(tmp_path / "run", config={"lr": 0.2}, resume=True)


@pytest.mark.multibackend
def test_full_disk_while_checkpointing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    x, y = _data()
    run = TrainingRun(tmp_path / "run")
    model = _model()
    run.fit(model, x, y=y, epochs=1, verbose=0)

    def no_space(path, data, shown):  # checkpoint files are plain writes of bytes composed in memory
        raise OSError(28, "No space left on device", str(shown))

    from keras_ssl3d.training import checkpoint

    monkeypatch.setattr(checkpoint, "_write_bytes", no_space)
    resumed = TrainingRun(tmp_path / "run", resume=True)
    with pytest.raises(RunError, match="No space left on device.*the checkpoint epoch-0001 is intact"):
        resumed.fit(model, x, y=y, epochs=2, verbose=0)
    assert latest_checkpoint(tmp_path / "run").name == "epoch-0001"
    leftovers = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert sorted(leftovers) == ["epoch-0001", "latest"]


_SCRIPT = textwrap.dedent(
    """
    import sys, time, keras, numpy as np
    from keras_ssl3d.training import TrainingRun

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32"); y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    run = TrainingRun(sys.argv[1], resume=sys.argv[2] == "1")
    try:
        run.fit(model, x, y=y, epochs=3, batch_size=4, verbose=0, callbacks=[Slow()])
    except KeyboardInterrupt as e:
        print("INTERRUPTED", e); sys.exit(130)
    print("DONE", run.checkpoint.name)
    """
)


def _wait_for(path, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_run_resumes(tmp_path, sig):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    _wait_for(run_dir / "checkpoints" / "epoch-0001")
    time.sleep(0.3)  # inside epoch 2
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out
        assert "INTERRUPTED" in out
        assert "partial" in latest_checkpoint(run_dir).name
    else:
        assert proc.returncode == -signal.SIGKILL
        assert latest_checkpoint(run_dir).name == "epoch-0001"
    done = subprocess.run([sys.executable, str(script), str(run_dir), "1"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DONE epoch-0003" in done.stdout
    history = (run_dir / "history.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3"]


def test_a_task_setting_added_later_is_recorded_only_when_it_differs():
    """Exemplar/SimCLR gained ``augment_on``: at its default a run.json is the one older runs wrote (they resume)."""
    from keras_ssl3d.training.run import record_added

    older = {"task": "exemplar", "task_config": {"hidden_units": 64}}
    assert record_added({**older, "task_config": {"hidden_units": 64, "augment_on": "auto"}}, "pretrain") == older
    changed = record_added({**older, "task_config": {"hidden_units": 64, "augment_on": "device"}}, "pretrain")
    assert changed["task_config"] == {"hidden_units": 64, "augment_on": "device"}

