"""A checkpoint is a folder: model weights, optimizer state (by variable path) and state.json.

Checkpoints live in ``RUN_DIR/checkpoints/epoch-NNNN/`` and ``RUN_DIR/checkpoints/latest`` names
the newest complete one. Each folder is written under a temporary name and renamed when complete,
and ``latest`` is replaced atomically, so a kill at any moment leaves the previous checkpoint
usable. The optimizer state is stored by variable path (not by position) so that it can be
restored into a freshly built model, even when some weights were frozen when it was built.
"""

import json
import shutil
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_ssl3d.errors import RunError
from keras_ssl3d.fileio import atomic_directory, marker_kind, write_text_atomic

WEIGHTS = "model.weights.h5"
OPTIMIZER = "optimizer.h5"
STATE = "state.json"
LATEST = "latest"
CHECKPOINT_OUTPUT = marker_kind("checkpoint", (WEIGHTS, OPTIMIZER), STATE)


def checkpoints_dir(run_dir):
    return Path(run_dir) / "checkpoints"


def save_checkpoint(model, run_dir, state, keep=2):
    """Write a checkpoint for ``state["epoch"]`` (epochs completed) and point ``latest`` at it."""
    root = checkpoints_dir(run_dir)
    name = f"epoch-{int(state['epoch']):04d}" + ("-partial" if state.get("partial") else "")
    target = root / name
    try:
        with atomic_directory(target, CHECKPOINT_OUTPUT) as tmp:
            model.save_weights(str(tmp / WEIGHTS))
            _save_optimizer(model, tmp / OPTIMIZER)
            (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        write_text_atomic(root / LATEST, name + "\n")
    except OSError as e:
        raise RunError(f"cannot write checkpoint ({e.strerror or e}); the previous checkpoint is intact",
                       path=e.filename or target) from None
    _prune(root, keep=keep, current=name)
    return target


def latest_checkpoint(run_dir):
    root = checkpoints_dir(run_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not (path / STATE).is_file():
        raise RunError("the latest checkpoint is incomplete or was removed", path=path)
    return path


def load_checkpoint(model, path):
    """Restore weights into ``model`` and return the state dict; optimizer state is restored later,
    once the optimizer is built (see ``restore_optimizer``)."""
    path = Path(path)
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        with warnings.catch_warnings():  # the optimizer is not built yet: restore_optimizer does it
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
            model.load_weights(str(path / WEIGHTS))
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"cannot read checkpoint ({type(e).__name__}: {e})", path=path) from None
    return state


def restore_optimizer(model, path):
    """Assign saved optimizer variables to ``model``'s built optimizer; returns how many were restored."""
    file = Path(path) / OPTIMIZER
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not file.is_file():
        return 0
    if not optimizer.built:  # Keras builds it lazily at the first step, over the trainable weights
        optimizer.build(model.trainable_variables)
    by_key = {key: v for v, key in _optimizer_keys(model)}
    restored = 0
    with h5py.File(file, "r") as f:
        for name in f:
            dataset = f[name]
            variable = by_key.get(dataset.attrs["key"])
            if variable is not None and tuple(variable.shape) == dataset.shape:
                variable.assign(np.asarray(dataset))
                restored += 1
    return restored


def _optimizer_keys(model):
    """Name each optimizer variable by (index of the model weight it belongs to, slot name).

    Slot variables are named after their weight's path, and paths carry auto-generated layer
    names (``dense_3``) that differ between two builds of the same model; the weight's position
    in ``model.weights`` does not.
    """
    prefixes = sorted(((w.path.replace("/", "_"), i) for i, w in enumerate(model.weights)),
                      key=lambda item: -len(item[0]))
    for variable in model.optimizer.variables:
        name = variable.name
        key = f"optimizer:{name}"
        for prefix, index in prefixes:
            if name.startswith(prefix + "_"):
                key = f"weight{index}:{name[len(prefix) + 1:]}"
                break
        yield variable, key


def _save_optimizer(model, file):
    with h5py.File(file, "w") as f:
        if getattr(model, "optimizer", None) is None:
            return
        for i, (variable, key) in enumerate(_optimizer_keys(model)):
            dataset = f.create_dataset(str(i), data=keras.ops.convert_to_numpy(variable))
            dataset.attrs["key"] = key


def _prune(root, keep, current):
    done = sorted(p for p in root.glob("epoch-*") if p.is_dir() and not p.name.endswith(".tmp"))
    old = [p for p in done if p.name != current]
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
