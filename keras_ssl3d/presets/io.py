"""Save and load preset folders, verifying the weights' sha256.

A preset folder holds:
- ``config.json``: the serialized model (``keras.saving.serialize_keras_object``);
- ``model.weights.h5``: the weights;
- ``metadata.json``: package/Keras versions, parameter count, input contract, the weights' sha256,
  and free-form provenance (task, hyper-parameters, data set).
Loading never unpickles anything: configs are deserialized with ``safe_mode=True``.
"""

import contextlib
import hashlib
import json
import platform
import warnings
from pathlib import Path

import keras

from keras_ssl3d.errors import PresetError
from keras_ssl3d.fileio import OutputKind, atomic_directory
from keras_ssl3d.training.checkpoint import save_weights_file
from keras_ssl3d.version import __version__

# Keras's UserWarning when a weights file holds optimizer variables the loading model has no optimizer for.
OPTIMIZER_WARNING = ".*Skipping variable loading for optimizer.*"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1

DEFAULT_INPUT_CONTRACT = {
    "orientation": "RAS",
    "intensity_normalization": "per-channel min-max to [0, 1]",
    "layout": "channels_last",
}


def _is_preset_folder(folder):
    """Whether ``folder`` holds a preset written by keras-ssl3d (its metadata says so)."""
    try:
        meta = json.loads((Path(folder) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and "keras_ssl3d_version" in meta and (Path(folder) / CONFIG_FILE).is_file()


PRESET_OUTPUT = OutputKind("preset", frozenset((CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)), _is_preset_folder)


def sha256_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_contract(model, extra=None):
    """What inputs a saved encoder expects: channels, their names, rank, size rules."""
    contract = dict(DEFAULT_INPUT_CONTRACT)
    in_channels = getattr(model, "in_channels", None)
    names = getattr(model, "channel_names", None)
    contract.update(
        rank=getattr(model, "rank", None),
        in_channels=in_channels,
        channel_names=list(names) if names else None,
        spatial_shape=list(model.spatial_shape) if getattr(model, "spatial_shape", None) else None,
    )
    if extra:
        contract.update(extra)
    return contract


def save_preset(model, directory, metadata=None, input_contract_extra=None):
    """Write ``model`` as a preset folder, atomically (the folder appears complete or not at all).

    ``directory`` must be new, empty or an earlier preset holding only the preset's files (which are
    replaced); anything else is an `OutputError` and nothing is written.
    """
    directory = Path(directory)
    config = keras.saving.serialize_keras_object(model)
    with atomic_directory(directory, PRESET_OUTPUT) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_weights_file(model, tmp / WEIGHTS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "class_name": type(model).__name__,
            "keras_ssl3d_version": __version__,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "python_version": platform.python_version(),
            "parameter_count": int(model.count_params()),
            "input_contract": input_contract(model, input_contract_extra),
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
        }
        meta.update(metadata or {})
        meta["weights_sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


def read_metadata(directory):
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise PresetError(f"not a preset folder: {METADATA_FILE} is missing", path=directory)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"metadata is not valid JSON ({e})", path=path) from None


def _read_config(directory):
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PresetError(f"not a preset folder: {CONFIG_FILE} is missing", path=directory)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"config is not valid JSON ({e})", path=path) from None


def verify_weights(weights_path, expected_sha256, source="metadata"):
    actual = sha256_file(weights_path)
    if expected_sha256 and actual != expected_sha256:
        raise PresetError(
            f"weights sha256 {actual[:12]}... does not match the {source} ({expected_sha256[:12]}...): "
            "the file is corrupted or was tampered with; delete it and download or rebuild the preset",
            path=weights_path,
        )
    return actual


def load_preset(directory, expected_sha256=None, cls=None):
    """Load a preset folder; check the weights against metadata (and ``expected_sha256``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PresetError("preset folder does not exist", path=directory)
    config = _read_config(directory)
    metadata = read_metadata(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise PresetError(f"{WEIGHTS_FILE} is missing from the preset folder", path=directory)
    if not metadata.get("weights_sha256"):
        raise PresetError("metadata has no weights_sha256; refusing unverified weights", path=directory)
    verify_weights(weights, metadata["weights_sha256"], "preset metadata")
    if expected_sha256:
        verify_weights(weights, expected_sha256, "pinned registry value")
    model = _deserialize(config, directory)
    if cls is not None and not isinstance(model, cls):
        raise PresetError(f"preset holds a {type(model).__name__}, not a {cls.__name__}", path=directory)
    try:
        with _optimizer_warning_hidden():
            model.load_weights(str(weights))
    except Exception as e:  # h5py/keras raise many types for truncated or mismatched files
        raise PresetError(f"cannot load weights ({type(e).__name__}: {_first_line(e)})", path=weights) from None
    return model


def load_keras_file(path, cls=None):
    """Load a ``.keras`` archive with ``safe_mode=True``."""
    import keras_ssl3d

    keras_ssl3d.import_all()  # registers every serializable class (the CLI imports the package lazily)
    path = Path(path)
    if not path.is_file():
        raise PresetError("file does not exist", path=path)
    try:
        with _own_classes(), _optimizer_warning_hidden():
            model = keras.saving.load_model(str(path), safe_mode=True)
    except Exception as e:
        raise PresetError(f"cannot load .keras file ({type(e).__name__}: {_first_line(e)})", path=path) from None
    if cls is not None and not isinstance(model, cls):
        raise PresetError(f"file holds a {type(model).__name__}, not a {cls.__name__}", path=path)
    return model


def _deserialize(config, directory):
    import keras_ssl3d

    keras_ssl3d.import_all()  # registers every serializable class (the CLI imports the package lazily)

    try:
        with _own_classes():
            return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:
        raise PresetError(
            f"cannot rebuild the model from {CONFIG_FILE} ({type(e).__name__}: {_first_line(e)})", path=directory
        ) from None


# The model classes a preset holds, as they are defined (`PretrainedMixin.__init_subclass__` adds them): the
# preset layer knows them without importing the models above it.
_MODEL_CLASSES = []


def register_model_class(cls):
    _MODEL_CLASSES.append(cls)


@contextlib.contextmanager
def _optimizer_warning_hidden():
    """A fine-tuned model's file holds its training optimizer, which loading for use does not need: Keras' warning
    that it skipped those variables is noise (only that warning is hidden)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OPTIMIZER_WARNING, category=UserWarning)
        yield


def _own_classes():
    """Rebuild our models as our own classes, also where integrations/keras_hub.py registered keras-hub
    Backbone twins under their names (only keras-hub's loaders should get those)."""
    return keras.saving.custom_object_scope({keras.saving.get_registered_name(c): c for c in _MODEL_CLASSES})


def _first_line(e):
    """The first line of an error, with the lines that a line ending in ':' announces (Keras puts the reason there)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines[1:]:
        if not text.endswith(":"):
            break
        text += " " + line
    return text if len(text) <= 400 else text[:397] + "..."
