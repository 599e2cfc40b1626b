"""``TrainingRun``: ``fit`` that checkpoints (every epoch by default) and resumes where a run stopped.

A run directory holds ``run.json`` (the exact command, package versions, backend and config),
``history.csv`` (one row per finished epoch) and ``checkpoints/``. A run killed at any moment
(even SIGKILL) loses at most the epoch in progress (or the epochs since the last checkpoint with
``checkpoint_every`` / ``checkpoint_seconds``): ``TrainingRun(dir, resume=True).fit(...)``
reloads the weights, the optimizer state and the epoch counter and goes on. Randomness is
re-seeded from ``(seed, epoch)`` at every epoch start and data sources that have ``set_epoch``
are told the epoch, so a resumed run sees the same batches as an uninterrupted one.
Ctrl-C (SIGINT) stops after the current batch and saves a checkpoint first.
"""

import csv
import datetime
import io
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

import keras

from keras_ssl3d.errors import RunError
from keras_ssl3d.fileio import OutputKind, claim_output_dir, disk_full_reason, write_json_atomic, write_text_atomic
from keras_ssl3d.training import checkpoint as ckpt
from keras_ssl3d.version import __version__

RUN_FILE = "run.json"
# Seconds to sleep after every training batch; set by the interruption tests, never by users.
_BATCH_DELAY = float(os.environ.get("KERAS_SSL3D_TEST_BATCH_DELAY", "0") or 0)
HISTORY_FILE = "history.csv"
_clock = time.monotonic  # the clock of checkpoint_seconds (a test replaces it)
# A run folder is one with run.json, or the leftover of a start that failed before its first checkpoint
# (`discard_if_unstarted` leaves at most these); any other non-empty folder is the user's and refused.
_LEFTOVERS = frozenset((HISTORY_FILE, "checkpoints", "tensorboard"))
RUN_OUTPUT = OutputKind("training run", frozenset(), lambda folder: (Path(folder) / RUN_FILE).is_file() or all(
    p.name in _LEFTOVERS for p in Path(folder).iterdir()))


def environment_versions():
    versions = {
        "keras_ssl3d": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
    }
    for module in ("numpy", "tensorflow", "jax", "torch", "nibabel", "huggingface_hub"):
        mod = sys.modules.get(module)
        if mod is not None:
            versions[module] = getattr(mod, "__version__", "unknown")
    return versions


def read_run_record(run_dir):
    """The dict in ``run_dir/run.json``; a missing, truncated or corrupt file is a one-line `RunError`."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunError(f"nothing to resume: no {RUN_FILE} in the run directory", path=run_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"cannot resume: {RUN_FILE} is truncated or corrupt ({e})", path=path) from None
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        raise RunError(f"cannot resume: {RUN_FILE} is not a run record of keras-ssl3d", path=path)
    return record


def check_run_dir(run_dir):
    """Fail early, before any data is read or cached beside it, if ``run_dir`` cannot be created.

    Creates nothing: the nearest existing folder above it must be a writable folder, and ``run_dir`` new,
    empty or a run folder (never a folder of the user's files).
    """
    claim_output_dir(run_dir, RUN_OUTPUT)
    path = Path(run_dir).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RunError("cannot create the run directory (Not a directory)", path=run_dir)
    if existing is not None and not os.access(existing, os.W_OK):
        raise RunError("the run directory is not writable", path=run_dir)


class TrainingRun:
    """A resumable training run stored in ``run_dir``.

    Args:
        run_dir: the folder of the run (created if needed).
        config: JSON-serializable settings recorded in ``run.json`` (hyper-parameters, data...).
        resume: continue the run found in ``run_dir``; without it an existing run is an error,
            so that a typo never overwrites days of training.
        seed: base seed; epoch ``e`` runs with ``seed * 100003 + e``.
        keep: how many epoch checkpoints to keep.
        checkpoint_every: write a checkpoint only once this many epochs have passed since the last one,
        checkpoint_seconds: ... and this many seconds (both rules together: the smallest spacing). The
            last epoch, an early stop and Ctrl-C always write one; a SIGKILL loses the epochs since
            the last checkpoint, and ``--resume`` repeats them exactly. ``history.csv`` is written
            after every epoch either way. On small data a checkpoint can cost a fifth of an epoch.
    """

    def __init__(self, run_dir, config=None, resume=False, seed=0, keep=2, command=None, checkpoint_every=1,
                 checkpoint_seconds=0.0):
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})
        self.resume = bool(resume)
        self.seed = int(seed)
        self.keep = int(keep)
        self.command = list(command) if command is not None else list(sys.argv)
        self.interrupted = False
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_seconds = float(checkpoint_seconds or 0.0)
        if self.checkpoint_every < 1 or self.checkpoint_seconds < 0:
            raise RunError(f"checkpoint_every must be >= 1 and checkpoint_seconds >= 0, got {checkpoint_every} "
                           f"and {checkpoint_seconds}")
        self._prepare()

    # -- run directory --------------------------------------------------------------------------
    def _prepare(self):
        claim_output_dir(self.run_dir, RUN_OUTPUT)
        self._created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the run directory ({e.strerror or e})", path=self.run_dir) from None
        if not os.access(self.run_dir, os.W_OK):
            raise RunError("the run directory is not writable", path=self.run_dir)
        record_path = self.run_dir / RUN_FILE
        existing = ckpt.latest_checkpoint(self.run_dir)
        if self.resume:
            record = read_run_record(self.run_dir)
            recorded = record.get("config", {})
            if self.config and recorded and _comparable(recorded) != _comparable(self.config):
                changed = sorted(k for k in set(recorded) | set(self.config)
                                 if recorded.get(k) != self.config.get(k) and k not in _VOLATILE)
                if changed:
                    raise RunError(f"cannot resume with different settings ({', '.join(changed)})",
                                   path=record_path)
            # What a resume may change (more --epochs, ...) is recorded as it is now, the rest as it was; the
            # devices a resume ran on go into its own entry (the config keeps those the run started on).
            now = {k: v for k, v in self.config.items() if k in _VOLATILE}
            entry = {"at": _now(), "command": self.command}
            if recorded and "distribution" in now:
                entry["distribution"] = now.pop("distribution")
            self.config = {**recorded, **now} if recorded else self.config
            record["config"] = self.config
            self.seed = int(record.get("seed", self.seed))
            record.setdefault("resumed", []).append(entry)
        else:
            if existing is not None or record_path.is_file():
                raise RunError("the run directory already holds a run: pass --resume to continue it, "
                               "or choose another output folder", path=self.run_dir)
            record = {
                "schema": SCHEMA_VERSION,
                "created": _now(),
                "command": self.command,
                "cwd": os.getcwd(),
                "seed": self.seed,
                "versions": environment_versions(),
                "config": self.config,
            }
        try:
            write_json_atomic(record_path, record)
        except OSError as e:
            raise RunError(f"cannot write {RUN_FILE}: {disk_full_reason(e) or e.strerror or e}",
                           path=record_path) from None
        self.record = record

    @property
    def checkpoint(self):
        return ckpt.latest_checkpoint(self.run_dir)

    # -- training -------------------------------------------------------------------------------
    def fit(self, model, x=None, epochs=1, callbacks=None, **fit_kwargs):
        """``model.fit`` with checkpoints; returns a ``keras.callbacks.History``-like object.

        ``model`` must be compiled. Pass ``initial_epoch`` only through ``resume``.
        """
        if getattr(model, "optimizer", None) is None:
            raise RunError("the model must be compiled before TrainingRun.fit")
        state = {"epoch": 0, "history": []}
        source = None
        latest = self.checkpoint
        if self.resume and latest is not None:
            state = ckpt.load_checkpoint(model, latest)
            source = latest
        start = int(state["epoch"])
        if start >= epochs:
            return _History(state["history"])
        if not model.optimizer.built:
            # Its slot variables would otherwise be created inside the first traced train step, which makes
            # TensorFlow trace that step twice (measured: ~2-4 s of a 24^3 fine-tuning run of ~50 s).
            model.optimizer.build(model.trainable_variables)
        fit_kwargs["verbose"] = progress_verbosity(fit_kwargs.get("verbose", "auto"))
        saver = _CheckpointCallback(self, model, x, state, source)
        previous_handler = _install_sigint(saver)
        try:
            model.fit(x, epochs=epochs, initial_epoch=start, callbacks=[saver, *(callbacks or [])], **fit_kwargs)
        except BaseException:
            self.discard_if_unstarted()
            raise
        finally:
            _restore_sigint(previous_handler)
        if saver.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt(
                f"training interrupted; checkpoint saved in {saver.last_saved}; "
                f"continue with --resume {self.run_dir}"
            )
        return _History(saver.state["history"])

    def discard_if_unstarted(self):
        """Remove what a new run wrote when it fails before its first checkpoint, so a rerun is not refused.

        A run that saved a checkpoint (or is a resumed one) keeps everything: it can go on with --resume.
        """
        if self.resume or self.checkpoint is not None:
            return
        if self._created_dir:  # everything in it is this run's
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in (RUN_FILE, HISTORY_FILE, "config.yaml"):
            (self.run_dir / name).unlink(missing_ok=True)
        for folder in (ckpt.checkpoints_dir(self.run_dir),):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def write_history(self, history):
        if not history:
            return
        keys = sorted({k for row in history for k in row if k != "epoch"})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["epoch", *keys])
        for row in history:
            writer.writerow([row["epoch"], *[row.get(k, "") for k in keys]])
        write_text_atomic(self.run_dir / HISTORY_FILE, buffer.getvalue())


class _CheckpointCallback(keras.callbacks.Callback):
    def __init__(self, run, model, data, state, source):
        super().__init__()
        self.run = run
        self.train_model = model
        self.data = data
        self.state = {"epoch": int(state["epoch"]), "history": list(state.get("history", []))}
        self.source = source
        self.epoch = self.state["epoch"]
        self.interrupt_requested = False
        self.interrupted = False
        self.last_saved = None
        self.saved_epoch = self.epoch  # epochs done at the last checkpoint
        self.saved_at = _clock()

    def on_train_begin(self, logs=None):
        if self.source is not None:
            ckpt.restore_optimizer(self.train_model, self.source)
        self.saved_at = _clock()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        _seed_epoch((self.run.seed * 100003 + epoch) % (2**31 - 1))
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if _BATCH_DELAY:  # tests only: makes "kill during epoch 2" timing reliable on fast machines
            time.sleep(_BATCH_DELAY)
        if self.interrupt_requested and not self.interrupted:
            self.interrupted = True
            self.train_model.stop_training = True
            self._sync()
            # The epoch in progress is not complete: resuming repeats it from these weights.
            state = dict(self.state, partial=True, epoch=self.epoch)
            self.last_saved = ckpt.save_checkpoint(self.train_model, self.run.run_dir, state, keep=self.run.keep)

    def on_epoch_end(self, epoch, logs=None):
        if self.interrupted:
            return
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if _is_number(v)})
        self.state["history"].append(row)
        self.state["epoch"] = epoch + 1
        self.state["partial"] = False
        if self._due(epoch + 1):
            self._save()
        self.run.write_history(self.state["history"])

    def on_train_end(self, logs=None):
        if not self.interrupted and self.state["epoch"] > self.saved_epoch:  # stopped early by a callback
            self._save()

    def _due(self, done):
        if done >= (self.params or {}).get("epochs", done):  # the last epoch
            return True
        return (done - self.saved_epoch >= self.run.checkpoint_every
                and _clock() - self.saved_at >= self.run.checkpoint_seconds)

    def _save(self):
        self._sync()
        self.last_saved = ckpt.save_checkpoint(self.train_model, self.run.run_dir, self.state, keep=self.run.keep)
        self.saved_epoch = self.state["epoch"]
        self.saved_at = _clock()

    def _sync(self):
        if keras.backend.backend() == "jax" and hasattr(self.train_model, "jax_state_sync"):
            self.train_model.jax_state_sync()


def progress_verbosity(verbose):
    """Keras's progress bar (1, "auto") on a terminal; one line per epoch (2) in a log file or pipe.

    The bar rewrites its line with carriage returns and ANSI colours every step: thousands of updates in a log.
    """
    if verbose in (1, "auto"):
        stream = sys.stdout
        return 1 if stream is not None and hasattr(stream, "isatty") and stream.isatty() else 2
    return verbose


def _seed_epoch(seed):
    """``keras.utils.set_random_seed(seed)``, less TensorFlow's global seed on the TensorFlow backend.

    ``tf.random.set_seed`` clears TensorFlow's kernel caches, so the first training step of every
    epoch re-instantiated the compiled step: about 2 s of a 4 s epoch at demo scale (2 CPU cores).
    Keras's TensorFlow ops draw stateless randomness from their ``SeedGenerator``s, not from TF's
    global seed, and this package's data randomness comes from numpy generators seeded by
    ``(seed, epoch, index)``; Python's and NumPy's global seeds are still set every epoch. What this
    leaves out on TensorFlow: raw ``tf.random`` ops and ``keras.random`` calls without a seed (Keras's
    global generator) are not re-seeded per epoch; nothing in this package makes such calls.
    """
    if keras.backend.backend() != "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


class _History:
    """What ``fit`` returns: ``history[metric]`` lists over all epochs, resumed ones included."""

    def __init__(self, rows):
        self.rows = rows
        keys = sorted({k for row in rows for k in row if k != "epoch"})
        self.history = {k: [row.get(k) for row in rows] for k in keys}
        self.epoch = [row["epoch"] - 1 for row in rows]


def _install_sigint(saver):
    if not _in_main_thread():
        return None

    def handler(signum, frame):
        if saver.interrupt_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        saver.interrupt_requested = True
        print("\nInterrupt: finishing the current batch and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous):
    if previous is not None and _in_main_thread():
        signal.signal(signal.SIGINT, previous)


def _in_main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


# Settings a resumed run may change. "distribution": a run may resume on another number of devices
# (from the checkpoint, with that many replicas from then on); "remat": same numbers, less memory;
# "checkpoint_every"/"checkpoint_seconds": when checkpoints are written, not what is trained.
# run.json's layout: 2 adds this field (a run.json without it is 1). What stays compatible across
# versions is written down here, in one place: settings that a resume may change (_VOLATILE), and
# settings added to a command's config after runs were made with it (ADDED_SETTINGS).
SCHEMA_VERSION = 2
# Per command, the value that a run.json without the setting was made with. A config records such a
# setting only when it differs (`record_added`), so an older run.json still compares equal and resumes.
ADDED_SETTINGS = {
    "pretrain": {"val_fraction": 0.0, "micro_batches": 1},
    "finetune": {"checkpoint_every": 1, "checkpoint_seconds": 0.0, "augment": "none", "patience": None,
                 "lr_schedule": "constant", "steps_per_epoch": None, "encoder_lr_scale": 1.0, "lr_warmup_epochs": 0,
                 "min_epochs": 0, "warmup_freezes": "encoder"},
}


# The same for settings added to a task's constructor (a pretraining run's ``task_config``).
ADDED_TASK_SETTINGS = {"augment_on": "auto"}


def record_added(config, command):
    """``config`` without the settings added after runs were made (`ADDED_SETTINGS`, `ADDED_TASK_SETTINGS`)
    that are at the value older runs had."""
    added = ADDED_SETTINGS[command]
    config = {k: v for k, v in config.items() if not (k in added and v == added[k])}
    if isinstance(config.get("task_config"), dict):
        config["task_config"] = {k: v for k, v in config["task_config"].items()
                                 if not (k in ADDED_TASK_SETTINGS and v == ADDED_TASK_SETTINGS[k])}
    return config


def recorded_config(run_dir):
    """The config in ``run_dir/run.json`` ({} when there is none; a corrupt one is a one-line `RunError`)."""
    return read_run_record(run_dir).get("config", {}) if (Path(run_dir) / RUN_FILE).is_file() else {}


def resumed_epoch(run_dir):
    """Epochs already done by the run in ``run_dir`` (0 when it has no checkpoint)."""
    latest = ckpt.latest_checkpoint(run_dir) if Path(run_dir).is_dir() else None
    if latest is None:
        return 0
    try:
        return int(json.loads((latest / ckpt.STATE).read_text(encoding="utf-8")).get("epoch", 0))
    except (OSError, ValueError, AttributeError) as e:
        raise RunError(f"cannot resume: the checkpoint's {ckpt.STATE} is truncated or corrupt ({e})",
                       path=latest) from None


_VOLATILE = {"resume", "out", "verbose", "workers", "epochs", "distribution", "remat", "checkpoint_every",
             "checkpoint_seconds"}


def _comparable(config):
    return {k: v for k, v in config.items() if k not in _VOLATILE}


def _is_number(value):
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
