"""The catalogue of named presets (the zoo registry): one JSON manifest per named preset, shipped inside the package.

A manifest (``keras_ssl3d/zoo/manifests/<name>.json``) records everything needed to trust, use
and rebuild a preset: the hub repo with the pinned revision and weights sha256 once published,
the recipe (task, hyper-parameters from the paper's appendix, input size, preprocessing, data
set), the input contract and the data licence. Demo presets also name a ``bundled`` folder
inside the package.

Extra manifest folders can be listed in ``KERAS_SSL3D_ZOO_MANIFESTS`` (``os.pathsep``-separated);
their entries override the built-in ones of the same name (used by tests, mirrors and private
zoos). The variable is read at call time.
"""

import dataclasses
import difflib
import json
import os
import re
from pathlib import Path

from keras_ssl3d.errors import PresetError
from keras_ssl3d.home import HOME_ENV, home_dir  # noqa: F401  (HOME_ENV: part of this module's interface)

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "zoo"  # the zoo's data: manifests/ and bundled/
MANIFEST_DIR = PACKAGE_DIR / "manifests"
MANIFESTS_ENV = "KERAS_SSL3D_ZOO_MANIFESTS"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REQUIRED_KEYS = ("name", "version", "title", "rank", "architecture", "hub", "recipe", "input_contract", "data",
                 "card")
STATUSES = ("bundled", "cached", "published", "recipe only")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One registry manifest, with typed access to the fields the resolver needs."""

    name: str
    manifest: dict
    source: Path

    @property
    def version(self):
        return self.manifest["version"]

    @property
    def rank(self):
        return int(self.manifest["rank"])

    @property
    def repo_id(self):
        return (self.manifest.get("hub") or {}).get("repo_id")

    @property
    def revision(self):
        """The pinned hub revision (a commit sha once published), or None."""
        return (self.manifest.get("hub") or {}).get("revision")

    @property
    def weights_sha256(self):
        """The pinned sha256 of ``model.weights.h5`` on the hub, or None."""
        return (self.manifest.get("hub") or {}).get("weights_sha256")

    @property
    def published(self):
        return bool(self.repo_id and self.revision and self.weights_sha256)

    @property
    def bundled_path(self):
        """The preset folder shipped inside the package, if any (and present)."""
        bundled = self.manifest.get("bundled")
        if not bundled or not bundled.get("path"):
            return None
        path = (PACKAGE_DIR / bundled["path"]).resolve()
        if PACKAGE_DIR.resolve() not in path.parents:
            raise PresetError("bundled path escapes the package", path=self.source)
        return path if (path / "model.weights.h5").is_file() else None

    @property
    def bundled_sha256(self):
        return (self.manifest.get("bundled") or {}).get("weights_sha256")

    @property
    def recipe(self):
        return self.manifest["recipe"]

    @property
    def input_contract(self):
        return self.manifest["input_contract"]

    @property
    def channel_names(self):
        return list(self.input_contract.get("channel_names") or [])


def local_build_dir(name):
    """Where ``keras-ssl3d zoo build NAME`` registers its result (a preset folder)."""
    _check_name(name)
    return home_dir() / "zoo" / name


def _check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise PresetError(f"invalid zoo preset name {name!r}: use lower-case letters, digits, '.', '_' and '-'")


def validate_manifest(manifest, source):
    """Check a manifest's shape; raise PresetError naming the file."""
    if not isinstance(manifest, dict):
        raise PresetError("a zoo manifest must be a JSON object", path=source)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise PresetError(f"zoo manifest lacks {', '.join(missing)}", path=source)
    _check_name(manifest["name"])
    if Path(source).stem != manifest["name"]:
        raise PresetError(f"zoo manifest file name does not match its name {manifest['name']!r}", path=source)
    if manifest["rank"] not in (2, 3):
        raise PresetError(f"rank must be 2 or 3, got {manifest['rank']!r}", path=source)
    hub = manifest["hub"]
    if not isinstance(hub, dict):
        raise PresetError("'hub' must be an object", path=source)
    for key in ("weights_sha256",):
        if hub.get(key) is not None and not SHA256_RE.match(str(hub[key])):
            raise PresetError(f"hub.{key} must be 64 lower-case hex digits", path=source)
    bundled = manifest.get("bundled")
    if bundled and bundled.get("weights_sha256") is not None and not SHA256_RE.match(bundled["weights_sha256"]):
        raise PresetError("bundled.weights_sha256 must be 64 lower-case hex digits", path=source)


def _read_dir(folder):
    entries = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PresetError(f"zoo manifest is not valid JSON ({e})", path=path) from None
        validate_manifest(manifest, path)
        entries[manifest["name"]] = ZooEntry(manifest["name"], manifest, path)
    return entries


_BUILTIN = None


def load_registry():
    """All zoo entries by name: the built-in manifests, then those of ``KERAS_SSL3D_ZOO_MANIFESTS``."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = _read_dir(MANIFEST_DIR)
    entries = dict(_BUILTIN)
    for folder in filter(None, os.environ.get(MANIFESTS_ENV, "").split(os.pathsep)):
        if not Path(folder).is_dir():
            raise PresetError(f"{MANIFESTS_ENV} names a folder that does not exist", path=folder)
        entries.update(_read_dir(folder))
    return dict(sorted(entries.items()))


def builtin_registry():
    """Only the manifests shipped in the package (what MODEL_CARDS.md documents)."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = _read_dir(MANIFEST_DIR)
    return dict(sorted(_BUILTIN.items()))


def get_entry(name):
    """The entry for ``name``; an unknown name raises PresetError listing the closest names."""
    registry = load_registry()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise PresetError(
        f"unknown preset {name!r}: {hint}`keras-ssl3d zoo list` shows every zoo preset; a hub repo is written "
        "'org/name' or 'hf://org/name', a local preset as a folder path"
    )


def hub_cache_dir(cache_dir=None):
    """The Hugging Face hub cache: ``cache_dir``, ``HF_HUB_CACHE``, ``HF_HOME/hub`` or the default."""
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_cached(entry, cache_dir=None):
    """Whether the pinned hub revision's weights are already in the Hugging Face cache."""
    if not (entry.repo_id and entry.revision):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(entry.repo_id, "model.weights.h5", cache_dir=hub_cache_dir(cache_dir),
                                   revision=entry.revision)
    return isinstance(found, str)


def entry_status(entry, cache_dir=None):
    """``bundled`` / ``cached`` (built locally or downloaded) / ``published`` / ``recipe only``."""
    if entry.bundled_path is not None:
        return "bundled"
    if (local_build_dir(entry.name) / "model.weights.h5").is_file() or hub_cached(entry, cache_dir):
        return "cached"
    if entry.published:
        return "published"
    return "recipe only"
