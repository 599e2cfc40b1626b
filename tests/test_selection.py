"""Model selection: the best validation epoch's weights are kept, across a resume and a kill between files."""

import keras
import numpy as np

import pytest

from keras_ssl3d.errors import RunError
from keras_ssl3d.finetune.selection import BestEpoch, best_of_history, best_weights_path, read_best, selected_weights
from keras_ssl3d.training import checkpoint as ckpt


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


def _set(model, value):
    model.set_weights([np.full(w.shape, value, dtype="float32") for w in model.get_weights()])


def _kept(run_dir):
    model = _model()
    model.load_weights(str(best_weights_path(run_dir)))
    return float(model.get_weights()[0].ravel()[0])


def test_best_epoch_is_kept_and_a_resumed_run_compares_with_it(tmp_path):
    model = _model()
    cb = BestEpoch(tmp_path, "val_score")
    cb.set_model(model)
    for epoch, (weight, score) in enumerate([(1.0, 0.2), (2.0, 0.5), (3.0, 0.3), (4.0, 0.5)]):
        _set(model, weight)
        cb.on_epoch_end(epoch, {"val_score": score})
    # epoch 2 (1-based) is the best; the tie at epoch 4 keeps the first
    assert read_best(tmp_path) == {"epoch": 2, "score": 0.5, "monitor": "val_score"} and _kept(tmp_path) == 2.0
    assert best_of_history([{"epoch": e + 1, "val_score": s} for e, s in enumerate([0.2, 0.5, 0.3, 0.5])],
                           "val_score") == (2, 0.5)

    resumed = BestEpoch(tmp_path, "val_score", resume=True)  # no checkpoint: nothing to catch up
    resumed.set_model(model)
    resumed.on_train_begin()
    _set(model, 5.0)
    resumed.on_epoch_end(4, {"val_score": 0.45})
    assert read_best(tmp_path)["epoch"] == 2 and _kept(tmp_path) == 2.0
    _set(model, 6.0)
    resumed.on_epoch_end(5, {"val_score": 0.7})
    assert read_best(tmp_path)["epoch"] == 6 and _kept(tmp_path) == 6.0


def test_resume_catches_up_a_kill_between_checkpoint_and_best(tmp_path):
    model = _model()
    cb = BestEpoch(tmp_path, "val_score")
    cb.set_model(model)
    _set(model, 1.0)
    cb.on_epoch_end(0, {"val_score": 0.2})
    # epoch 2 was better and its checkpoint was written, then the process died before best/ was
    _set(model, 2.0)
    history = [{"epoch": 1, "val_score": 0.2}, {"epoch": 2, "val_score": 0.6}]
    ckpt.save_checkpoint(model, tmp_path, {"epoch": 2, "history": history, "partial": False})
    assert read_best(tmp_path)["epoch"] == 1

    resumed_model = _model()
    ckpt.load_checkpoint(resumed_model, ckpt.latest_checkpoint(tmp_path))  # what TrainingRun.fit does
    resumed = BestEpoch(tmp_path, "val_score", resume=True)
    resumed.set_model(resumed_model)
    resumed.on_train_begin()
    assert read_best(tmp_path) == {"epoch": 2, "score": 0.6, "monitor": "val_score"} and _kept(tmp_path) == 2.0


def test_selected_weights_follow_the_history(tmp_path):
    rows = [{"epoch": 1, "val_score": 0.2}, {"epoch": 2, "val_score": 0.6}, {"epoch": 3, "val_score": 0.4}]
    with pytest.raises(RunError, match="best/ holds epoch None, but the best val_score of the history is epoch 2"):
        selected_weights(tmp_path, rows, "val_score")
    model = _model()
    cb = BestEpoch(tmp_path, "val_score")
    cb.set_model(model)
    for epoch, row in enumerate(rows):
        cb.on_epoch_end(epoch, row)
    assert selected_weights(tmp_path, rows, "val_score") == (2, best_weights_path(tmp_path))
    # the last epoch is the best (e.g. killed after its checkpoint, before best/): the model holds it
    rows.append({"epoch": 4, "val_score": 0.9})
    assert selected_weights(tmp_path, rows, "val_score") == (4, None)
    assert selected_weights(tmp_path, [{"epoch": 1, "loss": 1.0}], "val_score") is None
