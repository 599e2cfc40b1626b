"""The preprocessed cache: every command streams its subjects from here (memory-mapped, so a data set
larger than RAM trains), and a raw data set is preprocessed into one first (``ensure_cache``)."""

import hashlib
import json
from pathlib import Path

import numpy as np

from keras_ssl3d.data.arrays import resize_labels, resize_volume
from keras_ssl3d.data.cache_dtype import from_cache_dtype
from keras_ssl3d.data.preprocess import CACHE_FORMAT, CACHE_VERSION
from keras_ssl3d.errors import DataError, warn_data


def is_cache(path):
    return (Path(path) / "manifest.json").is_file()


class CachedDataset:
    """The subjects of a cache folder written by ``preprocess_dataset``.

    ``image(i)`` is float32 ``(S, S, S, C)``, ``label(i)`` uint8 ``(S, S, S)`` (or ``None``);
    both are read-only memory maps unless ``mmap=False`` (an image cached as float16, uint16 or uint8 is
    read through its memory map and returned as float32: half or a quarter of the bytes from disk;
    ``image(i, out=batch[k])`` writes it straight into a batch). With ``size`` (an int or 3 ints) each
    subject is resized to it when read (trilinear / nearest for labels) if the cache was made at
    another size, so one cache serves every ``--size``. ``labeled_only`` keeps only the subjects
    that have a label file (e.g. leaves out MSD test images).
    """

    def __init__(self, directory, mmap=True, size=None, labeled_only=False):
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
        _check_one_file_per_subject(manifest.get("subjects", []), path)
        self.subjects = [s for s in manifest.get("subjects", []) if s.get("label") or not labeled_only]
        unlabeled = [s["id"] for s in manifest.get("subjects", []) if not s.get("label")]
        if labeled_only and unlabeled and self.subjects:
            shown = ", ".join(str(i) for i in unlabeled[:5]) + (", ..." if len(unlabeled) > 5 else "")
            warn_data(f"{len(unlabeled)} subject(s) without a label file are left out of the labelled subjects "
                      f"({shown})", path=self.directory)
        for subject in self.subjects:  # batches stack subjects: name an odd one now, not in numpy later
            if subject.get("num_channels", self.num_channels) != self.num_channels:
                source = (subject.get("source_images") or [self.directory / subject["image"]])[0]
                raise DataError(f"has {subject['num_channels']} channel(s), the cache's subjects have "
                                f"{self.num_channels}: every subject needs the same modalities", path=source)
        self._mmap = "r" if mmap else None
        stored = tuple(int(n) for n in manifest.get("size", ()))
        self._resize_to = None
        if size is not None:
            wanted = (int(size),) * 3 if np.isscalar(size) else tuple(int(n) for n in size)
            if wanted != stored:
                self._resize_to = wanted

    def __len__(self):
        return len(self.subjects)

    def __repr__(self):
        return (f"CachedDataset({str(self.directory)!r}, n={len(self)}, size={self.spatial_shape}, "
                f"modalities={self.modalities})")

    def value_range(self):
        """``None``: a cache is min-max scaled to [0, 1] by ``preprocess`` (nothing to check)."""
        return None

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
    def dtype(self):
        """How the cache stores intensities (``float32`` for caches made before the choice existed)."""
        return self.manifest.get("dtype", "float32")

    @property
    def num_classes(self):
        return self.manifest.get("num_classes")

    @property
    def label_names(self):
        names = self.manifest.get("label_names")
        return None if names is None else {int(k): v for k, v in names.items()}

    @property
    def label_mapping(self):
        mapping = self.manifest.get("label_mapping")
        return None if mapping is None else {int(k): int(v) for k, v in mapping.items()}

    @property
    def inverse_label_mapping(self):
        inv = self.manifest.get("inverse_label_mapping")
        return None if inv is None else {int(k): int(v) for k, v in inv.items()}

    @property
    def spatial_shape(self):
        """The shape subjects are served at (the cache's own size unless ``size`` was given)."""
        return self._resize_to or tuple(self.manifest.get("size", ()))

    def info(self, i):
        return self.subjects[i]

    def _load(self, rel, what):
        path = self.directory / rel
        try:
            return np.load(path, mmap_mode=self._mmap, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"unreadable cached {what} ({e})", path=path) from None

    def image(self, i, out=None):
        """Subject ``i``'s image as float32; with ``out`` (a float array of the served shape) written into it."""
        stored = self._load(self.subjects[i]["image"], "image")
        if self._resize_to is not None:
            image = resize_volume(from_cache_dtype(stored), self._resize_to)
            if out is None:
                return image
            np.copyto(out, image)
            return out
        if out is not None and stored.shape != out.shape:
            raise DataError(f"cached image has shape {stored.shape}, the cache's subjects have {out.shape}",
                            path=self.directory / self.subjects[i]["image"])
        return from_cache_dtype(stored, out=out)

    def label(self, i):
        rel = self.subjects[i].get("label")
        if not rel:
            return None
        label = self._load(rel, "label")
        return label if self._resize_to is None else resize_labels(label, self._resize_to)

    def images(self, indices=None):
        """Stack images into one float32 array (in memory)."""
        indices = list(range(len(self)) if indices is None else indices)
        out = np.empty((len(indices), *self.spatial_shape, self.num_channels), dtype=np.float32)
        for slot, i in zip(out, indices):
            self.image(i, out=slot)
        return out

    def labels(self, indices=None):
        indices = range(len(self)) if indices is None else indices
        out = []
        for i in indices:
            lab = self.label(i)
            if lab is None:
                raise DataError(f"subject {self.subjects[i]['id']} has no label", path=self.directory)
            out.append(np.asarray(lab, dtype=np.uint8))
        return np.stack(out)


def _check_one_file_per_subject(subjects, manifest_path):
    """Older caches (version 1) could map two ids to one file, so one scan replaced the other: refuse those."""
    owner = {}
    for s in subjects:
        for rel in (s.get("image"), s.get("label")):
            if rel and rel in owner and owner[rel] != s.get("id"):
                raise DataError(f"subjects {owner[rel]!r} and {s.get('id')!r} share the file {rel} (a cache made by an "
                                "older keras-ssl3d: one overwrote the other); preprocess the data again into a new "
                                "folder", path=manifest_path)
            if rel:
                owner[rel] = s.get("id")


def open_cache(directory, mmap=True, size=None, labeled_only=False):
    return CachedDataset(directory, mmap=mmap, size=size, labeled_only=labeled_only)


def default_cache_dir(src, root, size, crop_foreground):
    """Where a raw data set's cache goes: ``root/keras-ssl3d-cache/<name>-<size>[-crop]-<hash>``.

    The name says what it holds; the hash of the source's absolute path keeps two data sets of the
    same name apart. ``root`` is the folder the run folder sits in, so runs beside each other
    (pretrain, finetune, study) share one cache per setting.
    """
    src = Path(src).resolve()
    # The cache version is hashed too: a cache in an older format is not reused (nor refused), a new one is made.
    key = f"{src}\0v{CACHE_VERSION}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    name = f"{src.name}-{int(size)}{'-crop' if crop_foreground else ''}-{digest}"
    return Path(root) / "keras-ssl3d-cache" / name


def ensure_cache(src, size, crop_foreground, cache_dir=None, root=None, workers=1, echo=None):
    """The cache of ``src`` at ``size``: ``src`` itself when it is a cache, else made once and reused.

    A raw data set (any layout ``discover`` reads) is preprocessed into ``cache_dir`` (default:
    ``default_cache_dir(src, root)``, ``root`` defaulting to keras-ssl3d's home folder
    ``$KERAS_SSL3D_HOME`` or ``~/.cache/keras_ssl3d``); a later call with the same settings finds every
    subject done and only checks the records, a killed preprocessing resumes, and a folder made
    with other settings is refused by ``preprocess_dataset``. Returns the cache folder.
    """
    if is_cache(src):
        return Path(src)
    from keras_ssl3d.data.preprocess import preprocess_dataset

    if cache_dir is None and root is None:
        from keras_ssl3d.home import home_dir

        root = home_dir()
    out = Path(cache_dir) if cache_dir else default_cache_dir(src, root, size, crop_foreground)
    done = []

    def progress(_sid, status):
        done.append(status)

    summary = preprocess_dataset(src, out, size=size, crop_foreground=crop_foreground, workers=workers,
                                 progress=progress)
    if echo is not None:
        if summary["done"]:
            echo(f"Preprocessed {summary['done']} subjects of {src} into the cache {out} "
                 f"({summary['already_done']} were already there; intensities as {summary['dtype']}: "
                 f"{summary['dtype_reason']})")
        else:
            echo(f"Using the cache {out} ({summary['already_done']} subjects, made earlier from {src})")
    return out
