"""The model zoo: named presets (registry manifests), hub download/publish, model cards, export.

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
    "PushResult": "hub", "push_model": "hub", "push_preset_folder": "hub",
    "ZooEntry": "registry", "entry_status": "registry", "get_entry": "registry", "load_registry": "registry",
    "local_build_dir": "registry",
    "download_preset": "resolve", "parse_handle": "resolve", "resolve_remote_handle": "resolve",
}


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"keras_ssl3d.zoo.{_NAMES[name]}"), name)
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
