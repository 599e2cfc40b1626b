"""The model zoo: named presets (registry manifests), hub download/publish, model cards, export.

- ``load_registry()`` / ``get_entry(name)`` / ``entry_status(entry)``: the registry.
- ``resolve_remote_handle(handle, ...)``: zoo names and hub repos -> local preset folder (used by
  ``from_pretrained``).
- ``push_model(model, repo_id, ...)`` / ``push_preset_folder(folder, repo_id, ...)``: publish.
- ``hub_model_card(metadata)`` / ``model_cards_markdown()``: cards.
- ``keras_ssl3d.zoo.export``: TF-Hub style SavedModel export (TensorFlow only; imported on use).
"""

from keras_ssl3d.zoo.cards import hub_model_card, model_cards_markdown
from keras_ssl3d.zoo.hub import PushResult, push_model, push_preset_folder
from keras_ssl3d.zoo.registry import ZooEntry, entry_status, get_entry, load_registry, local_build_dir
from keras_ssl3d.zoo.resolve import download_preset, parse_handle, resolve_remote_handle

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
