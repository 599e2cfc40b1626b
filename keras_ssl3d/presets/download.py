"""Resolve zoo names and Hugging Face Hub repos to a local preset folder.

Handles (local folders and ``.keras`` files are handled by ``keras_ssl3d.presets.resolve``):

- a zoo name, ``"brats-cpc"`` or ``"brats-cpc@<revision>"``: looked up in the registry; a
  bundled preset or a local ``zoo build`` result is used first, else the pinned hub revision is
  downloaded and its weights must match the pinned sha256 (``ResolvedPreset.expected_sha256``);
- a hub repo, ``"hf://org/name"`` or ``"org/name"``, optionally ``@<revision>`` (branch, tag or
  commit sha).

Files come through ``huggingface_hub`` into its standard cache. ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE`` are read when a handle is resolved (not only when
``huggingface_hub`` is imported), ``HF_TOKEN`` by ``huggingface_hub`` itself. Every failure is one
``PresetError`` that says what to do; tokens never appear in messages.
"""

import dataclasses
import functools
import os
import re
from pathlib import Path

from keras_ssl3d.errors import PresetError
from keras_ssl3d.presets.io import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, read_metadata
from keras_ssl3d.presets.catalogue import NAME_RE, get_entry, hub_cache_dir, local_build_dir

PRESET_FILES = (METADATA_FILE, CONFIG_FILE, WEIGHTS_FILE)
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclasses.dataclass
class ResolvedPreset:
    """A preset available on local disk.

    ``kind`` is ``"folder"`` or ``"keras_file"``; ``expected_sha256`` is a pinned value the
    weights must match on top of the folder's own metadata (zoo registry entries pin one).
    """

    path: Path
    kind: str
    source: str
    expected_sha256: str | None = None
    metadata: dict | None = None



# -- hub settings, read at call time --------------------------------------------------------------
def hub_endpoint():
    """``HF_ENDPOINT`` now (huggingface_hub itself only reads it at import)."""
    value = os.environ.get("HF_ENDPOINT")
    if value:
        return value.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline():
    value = os.environ.get("HF_HUB_OFFLINE")
    return value is not None and value.strip().upper() in _TRUE


def with_client_settings(sync_endpoint=False):
    """Run a function with huggingface_hub's import-time settings matching the environment now.

    huggingface_hub reads ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` once, when imported; users set
    them at any time. ``HF_HUB_OFFLINE`` is always applied for the call. The endpoint is applied
    only for uploads (the client parses the URLs the hub answers with against it); downloads pass
    it explicitly and keep the import-time value, which also names the cache namespace.
    """

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                from huggingface_hub import constants
            except ImportError:
                return function(*args, **kwargs)
            saved = (constants.ENDPOINT, constants.HF_HUB_OFFLINE)
            constants.HF_HUB_OFFLINE = hub_offline()
            if sync_endpoint:
                constants.ENDPOINT = hub_endpoint()
            try:
                return function(*args, **kwargs)
            finally:
                constants.ENDPOINT, constants.HF_HUB_OFFLINE = saved

        return wrapper

    return decorate


# -- handle parsing --------------------------------------------------------------------------------
def parse_handle(handle, revision=None):
    """Split a remote handle into ``(kind, id, revision)`` with kind ``"zoo"`` or ``"hub"``.

    Rejects anything that could name a path outside a repo or the cache: ``..`` segments,
    absolute paths, backslashes, empty parts and characters the Hub does not allow.
    """
    text = str(handle).strip()
    kind = None
    if text.startswith("hf://"):
        text, kind = text[len("hf://"):], "hub"
    if text.count("@") > 1:
        raise _bad_handle(handle, "more than one '@'")
    ident, _, rev = text.partition("@")
    if "@" in text and not rev:
        raise _bad_handle(handle, "empty revision after '@'")
    rev = rev or None
    if rev is not None and revision is not None and rev != revision:
        raise PresetError(f"preset handle {handle!r} names revision {rev!r} but revision={revision!r} was also given")
    rev = rev or revision
    if rev is not None:
        rev = str(rev)
        if not REVISION_RE.match(rev) or ".." in rev or "//" in rev or rev.endswith("/"):
            raise _bad_handle(handle, f"invalid revision {rev!r}")
    if "\\" in ident or ident.startswith("/") or any(p in ("", ".", "..") for p in ident.split("/")):
        raise _bad_handle(handle, "it must not contain '..', empty or absolute path parts")
    if "/" in ident or kind == "hub":
        if not REPO_ID_RE.match(ident) or ".." in ident or "--" in ident:
            raise _bad_handle(handle, "a hub repo is 'org/name' (letters, digits, '.', '_', '-')")
        return "hub", ident, rev
    if not NAME_RE.match(ident):
        raise _bad_handle(handle, "a zoo name uses lower-case letters, digits, '.', '_' and '-'")
    return "zoo", ident, rev


def _bad_handle(handle, why):
    return PresetError(f"invalid preset handle {str(handle)!r}: {why}")


# -- resolution ------------------------------------------------------------------------------------
def resolve_remote_handle(handle, *, revision=None, cache_dir=None, local_files_only=None, token=None):
    """Resolve a zoo name or hub repo to a local preset folder (downloading it when needed)."""
    kind, ident, rev = parse_handle(handle, revision)
    if kind == "hub":
        path = download_preset(ident, rev, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                               label=f"hub repo {ident!r}", fix="or copy the preset folder here and pass its path")
        return ResolvedPreset(path=path, kind="folder", source=str(handle), expected_sha256=None,
                              metadata=read_metadata(path))

    entry = get_entry(ident)
    fix = f"or build it from your data with `keras-ssl3d zoo build {ident} --data DIR`"
    if rev is None:
        if entry.bundled_path is not None:
            return ResolvedPreset(path=entry.bundled_path, kind="folder", source=str(handle),
                                  expected_sha256=entry.bundled_sha256, metadata=read_metadata(entry.bundled_path))
        built = local_build_dir(ident)
        if (built / WEIGHTS_FILE).is_file():
            return ResolvedPreset(path=built, kind="folder", source=str(handle), expected_sha256=None,
                                  metadata=read_metadata(built))
    if not entry.repo_id:
        raise PresetError(f"zoo preset {ident!r} has no hub repo and is not built locally: {fix[3:]}")
    if rev is None and not entry.published:
        raise PresetError(
            f"zoo preset {ident!r} is not published yet (status: recipe only) and not built locally: build it from "
            f"your data with `keras-ssl3d zoo build {ident} --data DIR` (`keras-ssl3d zoo info {ident}` shows the "
            f"recipe), or load a hub revision with '{ident}@<revision>'"
        )
    pinned = rev is None or rev == entry.revision
    path = download_preset(entry.repo_id, rev or entry.revision, cache_dir=cache_dir,
                           local_files_only=local_files_only, token=token,
                           label=f"zoo preset {ident!r} ({entry.repo_id})", fix=fix)
    return ResolvedPreset(path=path, kind="folder", source=str(handle),
                          expected_sha256=entry.weights_sha256 if pinned else None, metadata=read_metadata(path))


@with_client_settings()
def download_preset(repo_id, revision=None, *, cache_dir=None, local_files_only=None, token=None, label=None,
                    fix="or copy the preset folder here and pass its path"):
    """Download (or find in the cache) the preset files of ``repo_id`` at ``revision``; return the folder.

    One request (repo info) first tells a reachable hub from an unreachable one quickly; the
    files are then fetched at that exact commit so the three files always belong together.
    Offline, or when the hub cannot be reached, the cache is used for the same revision.
    """
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise PresetError("downloading presets needs huggingface_hub (pip install huggingface_hub)") from None

    label = label or f"hub repo {repo_id!r}"
    revision = revision or "main"
    endpoint = hub_endpoint()
    cache = hub_cache_dir(cache_dir)
    offline_reason = None
    if local_files_only:
        offline_reason = "local_files_only=True"
    elif hub_offline():
        offline_reason = "offline mode, HF_HUB_OFFLINE=1"

    common = dict(cache_dir=cache, token=token, endpoint=endpoint)
    unreachable = offline_reason
    commit = None
    if offline_reason is None:
        try:
            info = HfApi(endpoint=endpoint, token=token).repo_info(repo_id, revision=revision)
            commit = info.sha
        except Exception as e:  # noqa: BLE001  (mapped below; anything else means "cannot reach the hub")
            _raise_for_hub_error(e, hf_errors, repo_id, revision, label, endpoint)
            unreachable = f"cannot reach {endpoint}: {type(e).__name__}"

    try:
        if commit is not None:
            # The first download records refs/<revision> -> commit, so offline use finds it later.
            first = hf_hub_download(repo_id, METADATA_FILE, revision=revision, **common)
            commit = Path(first).parent.name
            paths = [first] + [hf_hub_download(repo_id, f, revision=commit, **common) for f in PRESET_FILES[1:]]
        else:
            first = hf_hub_download(repo_id, METADATA_FILE, revision=revision, local_files_only=True, **common)
            commit = Path(first).parent.name
            paths = [first] + [hf_hub_download(repo_id, f, revision=commit, local_files_only=True, **common)
                               for f in PRESET_FILES[1:]]
    except Exception as e:  # noqa: BLE001
        if isinstance(e, hf_errors.LocalEntryNotFoundError) or unreachable is not None:
            raise PresetError(
                f"{label} at revision {revision!r} is not in the local cache ({cache}) and the hub cannot be reached "
                f"({unreachable or 'connection failed'}): connect to the internet, set HF_ENDPOINT to a reachable "
                f"hub or mirror (now {endpoint}), {fix}"
            ) from None
        _raise_for_hub_error(e, hf_errors, repo_id, revision, label, endpoint)
        raise PresetError(f"downloading {label} failed ({type(e).__name__}: {_first_line(e)})") from None
    folder = Path(paths[0]).parent
    if any(Path(p).parent != folder for p in paths):
        raise PresetError(f"{label}: downloaded files belong to different commits; retry")
    return folder


def _raise_for_hub_error(e, hf_errors, repo_id, revision, label, endpoint):
    """Turn the hub's 'not found' and auth errors into PresetErrors; return for connectivity errors."""
    if isinstance(e, hf_errors.RevisionNotFoundError):
        raise PresetError(f"{label}: revision {revision!r} does not exist on {endpoint} (check the branch, tag or "
                          "commit; `@main` is the default)") from None
    if isinstance(e, hf_errors.RemoteEntryNotFoundError):
        raise PresetError(
            f"{label} at revision {revision!r} is not a keras-ssl3d preset: it lacks one of "
            f"{', '.join(PRESET_FILES)}"
        ) from None
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        raise PresetError(
            f"{label} not found on {endpoint}: check the name; if the repo is private or gated, set HF_TOKEN or pass "
            "token= with read access"
        ) from None
    if isinstance(e, hf_errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PresetError(f"{label}: the hub refused the credentials (HTTP {status}); check HF_TOKEN or "
                              "token=") from None
        if status is not None and status < 500:
            raise PresetError(f"{label}: the hub answered HTTP {status} ({_first_line(e)})") from None
    if isinstance(e, (ValueError, TypeError)) and not isinstance(e, hf_errors.HfHubHTTPError):
        raise PresetError(f"{label}: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e):
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else ""
