"""Preset folders: ``config.json`` + ``model.weights.h5`` + ``metadata.json`` (keras-hub style)."""

from keras_ssl3d.presets.io import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    load_keras_file,
    load_preset,
    read_metadata,
    save_preset,
    sha256_file,
)
from keras_ssl3d.presets.resolve import ResolvedPreset, resolve_handle

__all__ = [
    "CONFIG_FILE",
    "METADATA_FILE",
    "WEIGHTS_FILE",
    "ResolvedPreset",
    "load_keras_file",
    "load_preset",
    "read_metadata",
    "resolve_handle",
    "save_preset",
    "sha256_file",
]
