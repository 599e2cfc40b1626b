"""Model selection on the validation subjects: keep the weights of the best validation epoch.

A fine-tuning run with a validation set saves as ``model/`` the epoch with the best validation score
(the first one on ties), not whatever epoch training happened to stop on. The weights and their
epoch/score live in ``RUN/best/`` (``model.weights.h5`` + ``best.json``), replaced as one folder, so a
resumed run goes on comparing against the best score so far. The test subjects of a study are never
seen here: selecting on them would make the reported score optimistic.
"""

import json
import math
from pathlib import Path

import keras

from keras_ssl3d.errors import RunError
from keras_ssl3d.fileio import atomic_directory, marker_kind
from keras_ssl3d.training.checkpoint import save_weights_file

BEST_DIR = "best"
WEIGHTS = "model.weights.h5"
RECORD = "best.json"
BEST_OUTPUT = marker_kind("best-epoch folder", (WEIGHTS,), RECORD)


def read_best(run_dir):
    """``{"epoch", "score", "monitor"}`` of the kept weights, or None before the first validated epoch."""
    path = Path(run_dir) / BEST_DIR / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def best_weights_path(run_dir):
    return Path(run_dir) / BEST_DIR / WEIGHTS


def best_of_history(rows, monitor):
    """``(epoch, score)`` of the first best ``monitor`` value in history rows (epochs 1-based), or None."""
    best = None
    for row in rows:
        value = row.get(monitor)
        if value is not None and math.isfinite(float(value)) and (best is None or float(value) > best[1]):
            best = (int(row["epoch"]), float(value))
    return best


def selected_weights(run_dir, rows, monitor):
    """``(epoch, weights file)`` of the best epoch in the run's history rows; the file is None when
    that epoch is the last (the model holds its weights), and the result None without any score.

    The history (kept in every checkpoint) decides, ``best/`` only holds the weights: so a run killed
    after its last checkpoint but before ``best/`` was written, whose resume has nothing left to
    train, still saves the right epoch.
    """
    found = best_of_history(rows, monitor)
    if found is None:
        return None
    epoch = found[0]
    if epoch == max(int(row["epoch"]) for row in rows):
        return epoch, None
    kept = read_best(run_dir)
    if kept is None or int(kept["epoch"]) != epoch:
        raise RunError(f"{BEST_DIR}/ holds epoch {None if kept is None else kept['epoch']}, but the best "
                       f"{monitor} of the history is epoch {epoch}", path=run_dir)
    return epoch, best_weights_path(run_dir)


class BestEpoch(keras.callbacks.Callback):
    """Saves the model's weights into ``RUN/best/`` whenever ``monitor`` (higher is better) improves."""

    def __init__(self, run_dir, monitor, resume=False):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.resume = bool(resume)
        self.best = read_best(run_dir) if resume else None

    def on_train_begin(self, logs=None):
        if self.resume:
            self._catch_up()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is None or float(value) > self.best["score"]:
            self._save(epoch + 1, float(value))

    def _catch_up(self):
        """A run killed after its epoch checkpoint but before ``best/`` was written: the checkpoint
        it resumes from holds that epoch's weights, so they are saved now (``TrainingRun`` calls its
        checkpoint callback before this one at every epoch end)."""
        from keras_ssl3d.training.checkpoint import STATE, latest_checkpoint

        latest = latest_checkpoint(self.run_dir)
        if latest is None:
            return
        state = json.loads((latest / STATE).read_text(encoding="utf-8"))
        found = best_of_history(state.get("history", []), self.monitor)
        if state.get("partial") or found is None:
            return  # a partial checkpoint follows a complete epoch end, where best/ was written
        epoch, score = found
        if epoch == int(state["epoch"]) and (self.best is None or epoch > int(self.best["epoch"])):
            self._save(epoch, score)

    def _save(self, epoch, score):
        if keras.backend.backend() == "jax" and hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        self.best = {"epoch": int(epoch), "score": float(score), "monitor": self.monitor}
        with atomic_directory(self.run_dir / BEST_DIR, BEST_OUTPUT) as tmp:
            save_weights_file(self.model, tmp / WEIGHTS)
            (tmp / RECORD).write_text(json.dumps(self.best, indent=2) + "\n", encoding="utf-8")
