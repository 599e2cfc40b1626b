"""Reading a preprocessed cache: arrays are memory-mapped, so a data set larger than RAM trains."""

import json
from pathlib import Path

import numpy as np

from keras_ssl3d.data.preprocess import CACHE_FORMAT
from keras_ssl3d.errors import DataError


def is_cache(path):
    return (Path(path) / "manifest.json").is_file()


class CachedDataset:
    """The subjects of a cache folder written by ``preprocess_dataset``.

    ``image(i)`` is float32 ``(S, S, S, C)``, ``label(i)`` uint8 ``(S, S, S)`` (or ``None``);
    both are read-only memory maps unless ``mmap=False``.
    """

    def __init__(self, directory, mmap=True):
        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        if not path.is_file():
            raise DataError("not a preprocessed cache (no manifest.json); run `keras-ssl3d preprocess` first",
                            path=self.directory)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"unreadable manifest ({e})", path=path) from None
        if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
            raise DataError("manifest.json is not a keras-ssl3d cache manifest", path=path)
        self.manifest = manifest
        self.subjects = list(manifest.get("subjects", []))
        self._mmap = "r" if mmap else None

    def __len__(self):
        return len(self.subjects)

    def __repr__(self):
        return (f"CachedDataset({str(self.directory)!r}, n={len(self)}, size={self.spatial_shape}, "
                f"modalities={self.modalities})")

    @property
    def subject_ids(self):
        return [s["id"] for s in self.subjects]

    @property
    def modalities(self):
        return list(self.manifest.get("modalities", []))

    @property
    def num_channels(self):
        return int(self.manifest.get("num_channels", len(self.modalities)))

    @property
    def num_classes(self):
        return self.manifest.get("num_classes")

    @property
    def label_names(self):
        names = self.manifest.get("label_names")
        return None if names is None else {int(k): v for k, v in names.items()}

    @property
    def inverse_label_mapping(self):
        inv = self.manifest.get("inverse_label_mapping")
        return None if inv is None else {int(k): int(v) for k, v in inv.items()}

    @property
    def spatial_shape(self):
        return tuple(self.manifest.get("size", ()))

    @property
    def has_labels(self):
        return bool(self.subjects) and all(s.get("label") for s in self.subjects)

    def info(self, i):
        return self.subjects[i]

    def _load(self, rel, what):
        path = self.directory / rel
        try:
            return np.load(path, mmap_mode=self._mmap, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"unreadable cached {what} ({e})", path=path) from None

    def image(self, i):
        return self._load(self.subjects[i]["image"], "image")

    def label(self, i):
        rel = self.subjects[i].get("label")
        return None if not rel else self._load(rel, "label")

    def images(self, indices=None):
        """Stack images into one float32 array (in memory)."""
        indices = range(len(self)) if indices is None else indices
        return np.stack([np.asarray(self.image(i), dtype=np.float32) for i in indices])

    def labels(self, indices=None):
        indices = range(len(self)) if indices is None else indices
        out = []
        for i in indices:
            lab = self.label(i)
            if lab is None:
                raise DataError(f"subject {self.subjects[i]['id']} has no label", path=self.directory)
            out.append(np.asarray(lab, dtype=np.uint8))
        return np.stack(out)


def open_cache(directory, mmap=True):
    return CachedDataset(directory, mmap=mmap)
