"""Presets and where they come from: preset folders (``io``: ``config.json`` + ``model.weights.h5`` +
``metadata.json``, keras-hub style), handles (``resolve``), the catalogue of named presets
(``catalogue``), hub download and publishing (``download``, ``publish``), model cards (``cards``) and
input-channel adaptation (``adapt``).

Names are imported on first use: the catalogue alone must not import Keras (``keras-ssl3d zoo list``).
"""

import importlib

_NAMES = {
    "CONFIG_FILE": "io", "METADATA_FILE": "io", "WEIGHTS_FILE": "io", "load_keras_file": "io", "load_preset": "io",
    "read_metadata": "io", "save_preset": "io", "sha256_file": "io",
    "ResolvedPreset": "download", "resolve_handle": "resolve",
}


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"keras_ssl3d.presets.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'keras_ssl3d.presets' has no attribute {name!r}")


__all__ = sorted(_NAMES)
