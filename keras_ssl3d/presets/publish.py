"""Publish presets to the Hugging Face Hub.

``push_preset_folder`` verifies the folder (weights sha256 against its metadata), creates the repo
(``exist_ok``), creates the branch when ``revision`` names a new one, and uploads the three preset
files plus a generated model card ``README.md`` in one commit (``HfApi.create_commit``; no LFS
needed for presets of a few MB). The token is handed to ``huggingface_hub`` and never printed,
logged or written into a card; error messages never contain it.
"""

import dataclasses
import tempfile
from pathlib import Path

from keras_ssl3d.errors import PresetError
from keras_ssl3d.presets.io import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, read_metadata, save_preset, verify_weights
from keras_ssl3d.presets.download import REPO_ID_RE, REVISION_RE, hub_endpoint, hub_offline, with_client_settings

README_FILE = "README.md"


@dataclasses.dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str
    commit_sha: str
    commit_url: str
    weights_sha256: str

    @property
    def handle(self):
        """The handle that loads exactly this upload: ``hf://org/name@<commit>``."""
        return f"hf://{self.repo_id}@{self.commit_sha}"


def push_model(model, repo_id, *, token=None, private=False, revision=None, metadata=None, commit_message=None):
    """Save ``model`` as a preset and upload it (see ``push_preset_folder``)."""
    with tempfile.TemporaryDirectory(prefix="keras_ssl3d_push_") as tmp:
        folder = Path(tmp) / "preset"
        save_preset(model, folder, metadata=metadata)
        return push_preset_folder(folder, repo_id, token=token, private=private, revision=revision,
                                  commit_message=commit_message)


@with_client_settings(sync_endpoint=True)
def push_preset_folder(folder, repo_id, *, token=None, private=False, revision=None, commit_message=None,
                       card=True):
    """Upload a preset folder (config.json, model.weights.h5, metadata.json) + model card to ``repo_id``."""
    folder = Path(folder)
    _check_repo_id(repo_id)
    if revision is not None and (not REVISION_RE.match(str(revision)) or ".." in str(revision)):
        raise PresetError(f"invalid branch name {revision!r}")
    for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise PresetError(f"not a preset folder: {name} is missing", path=folder)
    metadata = read_metadata(folder)
    if not metadata.get("weights_sha256"):
        raise PresetError("metadata has no weights_sha256; refusing to publish unverified weights", path=folder)
    weights_sha256 = verify_weights(folder / WEIGHTS_FILE, metadata["weights_sha256"], "preset metadata")
    if hub_offline():
        raise PresetError("cannot push while HF_HUB_OFFLINE=1; unset it to publish")

    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise PresetError("publishing presets needs huggingface_hub (pip install huggingface_hub)") from None

    entry = _zoo_entry(metadata)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    try:
        api.create_repo(repo_id, private=bool(private), exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                      for name in (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE)]
        if card:
            from keras_ssl3d.presets.cards import hub_model_card

            text = hub_model_card(metadata, entry=entry, repo_id=repo_id)
            operations.append(CommitOperationAdd(path_in_repo=README_FILE, path_or_fileobj=text.encode("utf-8")))
        info = api.create_commit(
            repo_id, operations=operations, revision=branch,
            commit_message=commit_message or f"Upload keras-ssl3d preset ({metadata.get('class_name', 'model')})",
        )
    except Exception as e:  # noqa: BLE001  (mapped to one line; never includes the token)
        raise _push_error(e, hf_errors, repo_id, endpoint) from None
    return PushResult(repo_id=repo_id, revision=branch, commit_sha=info.oid, commit_url=str(info.commit_url),
                      weights_sha256=weights_sha256)


def _check_repo_id(repo_id):
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise PresetError(f"invalid hub repo id {repo_id!r}: use 'org/name' (letters, digits, '.', '_', '-')")


def _zoo_entry(metadata):
    name = metadata.get("zoo_name")
    if not name:
        return None
    from keras_ssl3d.presets.catalogue import load_registry

    return load_registry().get(name)


def _push_error(e, hf_errors, repo_id, endpoint):
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, hf_errors.RepositoryNotFoundError) or status in (401, 403):
        return PresetError(f"the hub at {endpoint} refused to write to {repo_id!r} (HTTP {status}): set HF_TOKEN or "
                           "pass token= with write access to that namespace")
    if isinstance(e, hf_errors.HfHubHTTPError):
        return PresetError(f"pushing to {repo_id!r} failed: the hub at {endpoint} answered HTTP {status}")
    if isinstance(e, ValueError):  # e.g. invalid README metadata reported by the hub
        text = str(e).strip().splitlines()
        return PresetError(f"pushing to {repo_id!r} failed: {text[0][:200] if text else type(e).__name__}")
    return PresetError(f"pushing to {repo_id!r} failed: cannot reach the hub at {endpoint} ({type(e).__name__}); "
                       "connect to the internet or set HF_ENDPOINT")
