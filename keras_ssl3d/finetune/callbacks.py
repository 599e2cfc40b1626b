"""Keras callbacks of converged fine-tuning: patience on the validation score and the lr per epoch (warm-up, poly).

Both are functions of the absolute epoch index ``fit`` reports and of the run's history (see
`keras_ssl3d.finetune.convergence`), so a run resumed from a checkpoint (``initial_epoch`` > 0, the
checkpoint's history passed in) goes on exactly where it stopped. Backend-agnostic: they only set
``model.stop_training`` and the optimizer's learning rate.
"""

import keras

from keras_ssl3d.finetune.convergence import epoch_lr, patience_stop


class PatienceStop(keras.callbacks.Callback):
    """Stop training once ``patience`` epochs passed without ``monitor`` (higher is better) improving.

    ``history``: the rows of the epochs already done (a resumed run's checkpoint history); epochs up to
    ``start_epoch`` (a warm-up) never count as "without improvement". ``stopped_epoch`` is the 1-based
    epoch training stopped at, or None.
    """

    def __init__(self, monitor, patience, start_epoch=0, history=()):
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.start_epoch = int(start_epoch)
        self.rows = [{"epoch": int(r["epoch"]), monitor: r.get(monitor)} for r in history]
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1]  # a repeated (partial) epoch counts once
        self.rows.append({"epoch": epoch + 1, self.monitor: None if value is None else float(value)})
        if patience_stop(self.rows, self.monitor, self.patience, self.start_epoch) == epoch + 1:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True


class EpochLearningRate(keras.callbacks.Callback):
    """The learning rate of each epoch from its start: a linear warm-up, then constant or poly (`epoch_lr`).

    Runs after a warm-up callback that rebuilds the optimizer, so it sets the rate of the optimizer the
    epoch trains with (``model.optimizer`` is read anew each epoch).
    """

    def __init__(self, initial_lr, max_epochs, schedule="poly", warmup_epochs=0):
        super().__init__()
        self.initial_lr = float(initial_lr)
        self.max_epochs = int(max_epochs)
        self.schedule = schedule
        self.warmup_epochs = int(warmup_epochs or 0)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = epoch_lr(self.initial_lr, epoch, self.max_epochs, self.schedule,
                                                      self.warmup_epochs)


class PolyDecay(EpochLearningRate):
    """nnU-Net's poly learning rate: ``initial_lr * (1 - epoch / max_epochs) ** 0.9`` from each epoch's start."""

    def __init__(self, initial_lr, max_epochs):
        super().__init__(initial_lr, max_epochs, schedule="poly")


def convergence_callbacks(monitor, patience, lr_schedule, lr, max_epochs, start_epoch=0, history=(),
                          lr_warmup_epochs=0):
    """The callbacks a fine-tuning run's convergence options ask for (put them after the warm-up's)."""
    callbacks = []
    if lr_schedule == "poly" or lr_warmup_epochs:
        callbacks.append(EpochLearningRate(lr, max_epochs, lr_schedule, lr_warmup_epochs))
    if patience is not None:
        callbacks.append(PatienceStop(monitor, patience, start_epoch, history))
    return callbacks


def checkpoint_history(run_dir, resume):
    """The history rows of the checkpoint a resumed run starts from ([] for a new run)."""
    import json
    from pathlib import Path

    if not resume or not Path(run_dir).is_dir():
        return []
    from keras_ssl3d.training.checkpoint import STATE, latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is None:
        return []
    try:
        return list(json.loads((latest / STATE).read_text(encoding="utf-8")).get("history", []))
    except (OSError, ValueError, AttributeError):
        return []  # the run's own resume reports a corrupt checkpoint in one line
