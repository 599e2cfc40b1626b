"""A checkpoint is a folder: model weights, optimizer state (by variable path) and state.json.

Checkpoints live in ``RUN_DIR/checkpoints/epoch-NNNN/`` and ``RUN_DIR/checkpoints/latest`` names
the newest complete one. Each folder is written under a temporary name and renamed when complete,
and ``latest`` is replaced atomically, so a kill at any moment leaves the previous checkpoint
usable. The optimizer state is stored by variable path (not by position) so that it can be
restored into a freshly built model, even when some weights were frozen when it was built.

HDF5 files are composed in memory and written with plain Python file writes: HDF5 does not survive a
failed write (a full disk or ``ulimit -f`` gave dozens of h5py tracebacks and a segmentation fault),
while a Python write fails with one ``OSError`` that names the file.
"""

import io
import json
import shutil
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_ssl3d.errors import RunError
from keras_ssl3d.fileio import atomic_directory, disk_full_reason, marker_kind, write_text_atomic

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
    previous = _latest_or_none(run_dir)
    try:
        with atomic_directory(target, CHECKPOINT_OUTPUT) as tmp:
            _write_bytes(tmp / WEIGHTS, weights_bytes(model), target / WEIGHTS)
            _write_bytes(tmp / OPTIMIZER, _optimizer_bytes(model), target / OPTIMIZER)
            _write_bytes(tmp / STATE, (json.dumps(state, indent=2) + "\n").encode("utf-8"), target / STATE)
        write_text_atomic(root / LATEST, name + "\n")
    except OSError as e:
        reason = disk_full_reason(e) or (e.strerror or str(e))
        kept = (f"the checkpoint {previous.name} is intact: continue with --resume {run_dir}"
                if previous is not None else "no checkpoint was saved yet")
        raise RunError(f"cannot write the checkpoint: {reason}; {kept}", path=e.filename or target) from None
    _prune(root, keep=keep, current=name)
    return target


def weights_bytes(model):
    """``model.save_weights`` as the bytes of a ``.weights.h5`` file, composed in memory (see the module doc)."""
    try:  # Keras writes its weights store into a BytesIO (Keras >= 3.6); older ones only to a path
        from keras.src.saving.saving_lib import H5IOStore, _save_state
    except ImportError:
        H5IOStore = None
    if H5IOStore is None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:  # (a failed write here is the old behaviour)
            path = Path(folder) / WEIGHTS
            model.save_weights(str(path))
            return path.read_bytes()
    buffer = io.BytesIO()
    store = H5IOStore(buffer, mode="w")
    _save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    store.close()
    return buffer.getvalue()


def save_weights_file(model, path):
    """``model.save_weights(path)`` that fails on a full disk with one ``OSError`` naming ``path``."""
    _write_bytes(path, weights_bytes(model), path)


def _write_bytes(path, data, shown):
    """Write ``data`` to ``path``; an error names ``shown`` (the file's final name, not the temporary one)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(shown)) from None


def _latest_or_none(run_dir):
    try:
        return latest_checkpoint(run_dir)
    except RunError:
        return None


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


def _optimizer_bytes(model):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        if getattr(model, "optimizer", None) is not None:
            for i, (variable, key) in enumerate(_optimizer_keys(model)):
                dataset = f.create_dataset(str(i), data=keras.ops.convert_to_numpy(variable))
                dataset.attrs["key"] = key
    return buffer.getvalue()


def _prune(root, keep, current):
    done = sorted(p for p in root.glob("epoch-*") if p.is_dir() and not p.name.endswith(".tmp"))
    old = [p for p in done if p.name != current]
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
