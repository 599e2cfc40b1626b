"""Turn a handle (local folder, ``.keras`` file, zoo name, hub repo) into a local preset."""

from pathlib import Path

from keras_ssl3d.errors import PresetError
from keras_ssl3d.presets.download import ResolvedPreset, resolve_remote_handle


def resolve_handle(handle, *, revision=None, cache_dir=None, local_files_only=None, token=None):
    """Resolve ``handle`` to a local preset, downloading it from the hub when needed."""
    if not isinstance(handle, (str, Path)) or not str(handle).strip():
        raise PresetError(f"a preset handle must be a non-empty string, got {handle!r}")
    text = str(handle).strip()
    path = Path(text).expanduser()
    if text.endswith(".keras"):
        if not path.is_file():
            raise PresetError(".keras file does not exist", path=path)
        return ResolvedPreset(path=path, kind="keras_file", source=text)
    if path.is_dir():
        return ResolvedPreset(path=path, kind="folder", source=text)
    if path.is_file():
        raise PresetError("is a file, not a preset folder (config.json, metadata.json, model.weights.h5) "
                          "or a .keras file", path=path)
    if _looks_like_path(text):
        raise PresetError("preset folder does not exist", path=path)
    return _resolve_remote(text, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                           token=token)


def _looks_like_path(text):
    return text.startswith((".", "/", "~")) or text.endswith(("/", "\\"))


def _resolve_remote(handle, **kwargs):
    """Zoo names and hub repos (``keras_ssl3d.presets.download``)."""
    return resolve_remote_handle(handle, **kwargs)
