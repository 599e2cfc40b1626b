"""The model zoo: builds presets from recipes (``build``) and exports them (``export``).

Where presets come from lives in ``keras_ssl3d.presets`` (``catalogue``: the manifests of
``zoo/manifests/``; ``download``, ``publish``, ``cards``); its names are re-exported here:

- ``load_registry()`` / ``get_entry(name)`` / ``entry_status(entry)``: the registry.
- ``resolve_remote_handle(handle, ...)``: zoo names and hub repos -> local preset folder (used by
  ``from_pretrained``).
- ``push_model(model, repo_id, ...)`` / ``push_preset_folder(folder, repo_id, ...)``: publish.
- ``hub_model_card(metadata)`` / ``model_cards_markdown()``: cards.
- ``keras_ssl3d.zoo.export``: TF-Hub style SavedModel export (TensorFlow only; imported on use).
"""

import importlib

# Imported on first use: the registry alone must not import Keras (`keras-ssl3d zoo list` is instant).
_NAMES = {
    "hub_model_card": "cards", "model_cards_markdown": "cards",
    "PushResult": "publish", "push_model": "publish", "push_preset_folder": "publish",
    "ZooEntry": "catalogue", "entry_status": "catalogue", "get_entry": "catalogue", "load_registry": "catalogue",
    "local_build_dir": "catalogue",
    "download_preset": "download", "parse_handle": "download", "resolve_remote_handle": "download",
}


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"keras_ssl3d.presets.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'keras_ssl3d.zoo' has no attribute {name!r}")


__all__ = [
    "PushResult",
    "ZooEntry",
    "download_preset",
    "entry_status",
    "get_entry",
    "hub_model_card",
    "load_registry",
    "local_build_dir",
    "model_cards_markdown",
    "parse_handle",
    "push_model",
    "push_preset_folder",
    "resolve_remote_handle",
]
