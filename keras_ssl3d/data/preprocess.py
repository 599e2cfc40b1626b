"""The paper's input preprocessing, in plain numpy, and the cache writer.

Per subject: load the modalities as channels (early fusion), optionally crop to the foreground
bounding box (self-supervised pretraining only), resize to ``size^3`` (trilinear for images,
nearest for labels), scale each channel to [0, 1], and remap label values to ``0..K-1`` (BraTS
4 -> 3). ``preprocess_dataset`` writes one ``.npy`` per image and label (memory-mappable) and a
``manifest.json`` holding what is needed to map predictions back to the original scans.
"""

import hashlib
import json
import multiprocessing
import re
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from keras_ssl3d.data.arrays import (  # noqa: F401  (the preprocessing steps, imported from here too)
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    SCALE_MODES,
    _as_shape3,
    crop_to_foreground,
    foreground_bbox,
    label_mapping_for,
    remap_labels,
    resize_labels,
    resize_volume,
    scale_intensity,
)
from keras_ssl3d.data.cache_dtype import CACHE_DTYPES, auto_cache_dtype, to_cache_dtype
from keras_ssl3d.data.layouts import discover
from keras_ssl3d.data.nifti import load_label_volume, load_volume
from keras_ssl3d.errors import DataError, warn_data
from keras_ssl3d.fileio import OutputKind, atomic_path, claim_output_dir, disk_full_reason, write_json_atomic

CACHE_FORMAT = "keras-ssl3d-cache"
# 2: file names are unique per subject id (a readable part and a hash); 1 mapped "Sub 1" and "Sub_1" to one file.
CACHE_VERSION = 2
# Voxels longer than this many times their shortest side are stretched visibly by the cubic resize.
ANISOTROPY_WARNING = 2.0


def preprocess_subject(subject, size=128, crop_foreground=False, scale="minmax", label_mapping=None,
                       channel_indices=None, expected_channels=None, margin=0,
                       percentiles=DEFAULT_PERCENTILES, window=DEFAULT_CT_WINDOW):
    """Load and preprocess one subject.

    Returns ``(image, label, info)``: float32 ``(S, S, S, C)`` in [0, 1]; uint8 ``(S, S, S)``
    classes (``None`` without a label file); and a dict with the original geometry (shape,
    affine, spacing), the crop box and the raw label values, as stored in the manifest.
    """
    shape = _as_shape3(size)
    if subject.problem:
        raise DataError(subject.problem)
    volume = load_volume(subject.image_paths, single_channel=subject.single_channel_paths)
    image = volume.array
    where = subject.image_paths[0]
    warn_if_anisotropic(volume.spacing, shape, where)
    if channel_indices is not None:
        if max(channel_indices) >= image.shape[-1]:
            raise DataError(f"has {image.shape[-1]} channels, dataset.json names more", path=where)
        image = image[..., list(channel_indices)]
    elif expected_channels is not None and image.shape[-1] != expected_channels:
        raise DataError(f"has {image.shape[-1]} channels, expected {expected_channels} "
                        f"({', '.join(subject.images)})", path=where)
    label = None
    label_values = None
    if subject.label is not None:
        raw = load_label_volume(subject.label, reference=volume)
        label_values = [int(v) for v in np.unique(raw)]
        label = remap_labels(raw, label_mapping, path=subject.label)
    bbox = [(0, int(n)) for n in image.shape[:3]]
    if crop_foreground:
        image, label, bbox = crop_to_foreground(image, label, margin=margin)
    image = resize_volume(image, shape)
    image = scale_intensity(image, scale, percentiles=percentiles, window=window)
    if label is not None:
        label = resize_labels(label, shape).astype(np.uint8)
    info = {
        "id": subject.id,
        "source_images": [str(p) for p in subject.image_paths],
        "source_label": None if subject.label is None else str(subject.label),
        "original_shape": list(volume.original_shape),
        "original_affine": np.asarray(volume.original_affine).tolist(),
        "affine": np.asarray(volume.affine).tolist(),
        "spacing": list(volume.spacing),
        "ras_shape": [int(n) for n in volume.array.shape[:3]],
        "num_channels": int(image.shape[-1]),
        "crop_bbox": [list(b) for b in bbox],
        "label_values": label_values,
    }
    return image, label, info


def warn_if_anisotropic(spacing, shape, path):
    """Say so when a resize to ``shape`` stretches voxels much longer along one axis (e.g. 1 x 1 x 5 mm)."""
    spacing = [float(v) for v in spacing]
    if min(spacing) > 0 and max(spacing) / min(spacing) > ANISOTROPY_WARNING:
        text = " x ".join(f"{v:g}" for v in spacing)
        warn_data(f"anisotropic voxels of {text} mm (ratio {max(spacing) / min(spacing):.1f}): resizing to "
                  f"{'x'.join(str(n) for n in shape)} stretches the scan along its coarse axis; resample it to "
                  "isotropic spacing first if shapes matter", path=path)


def labels_to_original(pred, info, inverse_mapping=None):
    """Undo resize and crop for a ``(S, S, S)`` prediction: returns the RAS-ordered map of the
    full scan (``info["ras_shape"]``) in raw label values, ready for ``save_label_map``."""
    pred = np.asarray(pred)
    box = info["crop_bbox"]
    crop_shape = tuple(b - a for a, b in box)
    out = np.zeros(tuple(info["ras_shape"]), dtype=np.int32)
    out[tuple(slice(a, b) for a, b in box)] = resize_labels(pred, crop_shape)
    if inverse_mapping:
        lut = np.arange(256, dtype=np.int32)
        for k, v in inverse_mapping.items():
            lut[int(k)] = int(v)
        out = lut[out]
    return out


# ---------------------------------------------------------------- the cache


def safe_name(subject_id):
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(subject_id)) or "subject"


def cache_name(subject_id):
    """The file name of a subject in the cache: readable, and unique per id (``Sub 1`` -> ``Sub_1-<hash>``).

    ``safe_name`` alone maps ``Sub 1`` and ``Sub_1`` (and every non-ASCII id of one length) to one name.
    """
    digest = hashlib.sha256(str(subject_id).encode("utf-8")).hexdigest()[:10]
    return f"{safe_name(subject_id)[:60]}-{digest}"


def _write_or_say_disk_full(path, write):
    """Run ``write()``; a full disk (or a file-size limit) becomes one line naming ``path``."""
    try:
        write()
    except OSError as e:
        words = disk_full_reason(e)
        if words is None:
            raise
        raise DataError(f"{words}; free some space and rerun the same command (finished subjects are kept)",
                        path=path) from None


def _process_and_write(job):
    """Worker: preprocess one subject and write its files; returns ``(id, info, error)``."""
    subject, out, kwargs, dtype = job
    try:
        image, label, info = preprocess_subject(subject, **kwargs)
    except DataError as e:
        return subject.id, None, str(e)
    except MemoryError:
        return subject.id, None, f"{subject.id}: out of memory"
    except Exception as e:  # a malformed file nibabel does not describe well: still one line
        return subject.id, None, f"{subject.image_paths[0]}: unreadable ({type(e).__name__}: {e})"
    name = cache_name(subject.id)
    out = Path(out)
    info["image"] = f"images/{name}.npy"
    stored = to_cache_dtype(image, dtype)
    _write_or_say_disk_full(out / info["image"], lambda: _save_npy(out / info["image"], stored))
    info["label"] = None
    if label is not None:
        info["label"] = f"labels/{name}.npy"
        _write_or_say_disk_full(out / info["label"], lambda: _save_npy(out / info["label"], label))
    # The record is written last: its presence marks the subject as done (resume).
    record = out / "subjects" / f"{name}.json"
    _write_or_say_disk_full(record, lambda: write_json_atomic(record, info))
    return subject.id, info, None


def _save_npy(path, array):
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _done_record(out, subject):
    rec = out / "subjects" / f"{cache_name(subject.id)}.json"
    if not rec.is_file():
        return None
    try:
        info = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files = [info.get("image"), info.get("label")]
    if info.get("id") != subject.id or not all((out / f).is_file() for f in files if f):
        return None
    return info


def _pool_context():
    # fork starts workers in milliseconds (spawn would re-import Keras in each one); the workers
    # only run numpy and nibabel.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin" else "spawn")


def preprocess_dataset(src, out, layout="auto", size=128, crop_foreground=False, workers=1, skip_bad=False,
                       progress=None, scale="minmax", modalities=None, margin=0, label_convention=None,
                       dtype=None):
    """Preprocess every subject of the data set at ``src`` into the cache folder ``out``.

    Resumable: subjects whose files are complete are skipped; every file is written atomically.
    A bad subject raises :class:`DataError` (nothing written for it) unless ``skip_bad``, which
    records it and goes on. ``progress(subject_id, status)`` is called as subjects finish.
    Returns a summary dict: ``done``, ``already_done``, ``failed`` (``[(id, message)]``), ``total``.
    A run that fails before any subject is written leaves no cache behind (nothing to refuse a rerun).
    ``label_convention`` (``brats2021``/``brats2023``) overrides the one read from BraTS file names.
    ``dtype`` (one of ``CACHE_DTYPES``) is how intensities are stored; ``None``: an existing cache keeps its
    own, a new one gets `auto_cache_dtype`'s (float32 while it fits in memory, uint16 beyond; the summary's
    ``dtype_reason`` says why).
    """
    out = Path(out)
    claim_output_dir(out, CACHE_OUTPUT)  # new, empty or a cache (resumed): never a folder of the user's files
    created = not out.exists()
    try:
        return _preprocess_dataset(src, out, layout, size, crop_foreground, workers, skip_bad, progress, scale,
                                   modalities, margin, label_convention, dtype)
    except BaseException:
        _discard_if_empty(out, created)
        raise


def _is_cache_folder(folder):
    """A cache written by the package: its manifest or settings say so, or it holds only cache folders."""
    folder = Path(folder)
    for name, key in (("manifest.json", "format"), ("settings.json", "layout")):
        try:
            record = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and key in record and "source" in record:
            return True
    return all(p.name in ("images", "labels", "subjects") for p in folder.iterdir())


CACHE_OUTPUT = OutputKind("preprocessed cache", frozenset(("images", "labels", "subjects", "settings.json",
                                                           "manifest.json")), _is_cache_folder)


def _read_settings(out):
    """The settings of an existing cache (caches made before ``dtype`` existed stored float32), or ``None``."""
    try:
        old = json.loads((Path(out) / "settings.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(old, dict):
        old.setdefault("dtype", "float32")
    return old


def _holds_subjects(out):
    return (out / "subjects").is_dir() and any((out / "subjects").glob("*.json"))


def _discard_if_empty(out, created):
    """Remove the settings (and the folders) a cache got before its first subject was written."""
    if not out.is_dir() or _holds_subjects(out):
        return
    (out / "settings.json").unlink(missing_ok=True)
    for folder in (out / "images", out / "labels", out / "subjects", out if created else None):
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _preprocess_dataset(src, out, layout, size, crop_foreground, workers, skip_bad, progress, scale, modalities,
                        margin, label_convention, dtype):
    if scale not in SCALE_MODES:
        raise DataError(f"unknown scale mode {scale!r}; choose one of {', '.join(SCALE_MODES)}")
    if dtype is not None and dtype not in CACHE_DTYPES:
        raise DataError(f"unknown cache dtype {dtype!r}; choose one of {', '.join(CACHE_DTYPES)}")
    out = Path(out)
    old = _read_settings(out)
    dataset = discover(src, layout=layout, modalities=modalities, label_convention=label_convention)
    shape = _as_shape3(size)
    reason = None
    if dtype is None and isinstance(old, dict) and _holds_subjects(out):
        dtype, reason = old["dtype"], "this cache's own"
    elif dtype is None:
        dtype, reason = auto_cache_dtype(len(dataset.subjects), shape, len(dataset.modalities))
    mapping = label_mapping_for(dataset.label_names)
    settings = {
        "source": str(Path(src).resolve()),
        "layout": dataset.layout,
        "size": list(shape),
        "crop_foreground": bool(crop_foreground),
        "scale": scale,
        "modalities": list(dataset.modalities),
        "margin": int(margin),
        "label_convention": dataset.extra.get("label_convention"),
        "cache_version": CACHE_VERSION,
        "dtype": dtype,
    }
    if out.exists() and not out.is_dir():
        raise DataError("output exists and is not a folder", path=out)
    settings_path = out / "settings.json"
    if settings_path.is_file() and _holds_subjects(out):  # settings of an empty cache may change
        if isinstance(old, dict) and old.get("cache_version") != CACHE_VERSION:
            raise DataError("cache was made by an older keras-ssl3d whose file names were not unique per subject "
                            "(one subject could overwrite another's); preprocess into a new output folder", path=out)
        if old != settings:
            diff = sorted(k for k in settings if (old or {}).get(k) != settings[k])
            raise DataError(f"cache was made with other settings ({', '.join(diff)}); use a new output folder",
                            path=out)
    else:
        _write_or_say_disk_full(settings_path, lambda: write_json_atomic(settings_path, settings))

    kwargs = {
        "size": shape,
        "crop_foreground": crop_foreground,
        "scale": scale,
        "label_mapping": mapping,
        "channel_indices": dataset.extra.get("channel_indices"),
        "expected_channels": len(dataset.extra.get("all_modalities", [])) or None,
        "margin": margin,
    }
    if dataset.layout != "msd":
        kwargs["expected_channels"] = None
    infos = {}
    pending = []
    for s in dataset.subjects:
        info = _done_record(out, s)
        if info is not None:
            infos[s.id] = info
        else:
            pending.append(s)
    already = len(infos)
    failed = []

    def report(sid, status):
        if progress is not None:
            progress(sid, status)

    for s in dataset.subjects:
        if s.id in infos:
            report(s.id, "skipped")

    def handle(sid, info, error):
        if error is None:
            infos[sid] = info
            report(sid, "done")
            return
        failed.append((sid, error))
        report(sid, "failed")
        if not skip_bad:
            raise DataError(error)

    jobs = [(s, str(out), kwargs, dtype) for s in pending]
    workers = max(1, int(workers or 1))
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            handle(*_process_and_write(job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
            # Bounded submission: at most 2 jobs per worker in flight, so an early error stops soon.
            it = iter(jobs)
            running = set()
            try:
                while True:
                    while len(running) < 2 * workers:
                        job = next(it, None)
                        if job is None:
                            break
                        running.add(pool.submit(_process_and_write, job))
                    if not running:
                        break
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for f in finished:
                        handle(*f.result())
            except BaseException:
                for f in running:
                    f.cancel()
                raise

    manifest = _write_manifest(out, dataset, settings, mapping, infos, failed)
    return {
        "total": len(dataset.subjects),
        "done": len(infos) - already,
        "already_done": already,
        "failed": failed,
        "manifest": str(out / "manifest.json"),
        "num_classes": manifest["num_classes"],
        "dtype": dtype,
        "dtype_reason": reason,  # None when the caller chose the dtype
    }


def _write_manifest(out, dataset, settings, mapping, infos, failed):
    subjects = [infos[s.id] for s in dataset.subjects if s.id in infos]
    channels = subjects[0]["num_channels"] if subjects else len(dataset.modalities)
    modalities = list(dataset.modalities)
    if len(modalities) != channels:
        modalities = [f"{modalities[0]}_{i}" for i in range(channels)]
    if mapping is not None:
        label_names = {str(mapping[int(k)]): v for k, v in dataset.label_names.items()}
        num_classes = len(mapping)
    else:
        values = [v for s in subjects for v in (s.get("label_values") or [])]
        num_classes = (max(values) + 1) if values else None
        label_names = None
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        **settings,
        "modalities": modalities,
        "num_channels": channels,
        "raw_label_names": None if dataset.label_names is None else {str(k): v for k, v in
                                                                    dataset.label_names.items()},
        "label_names": label_names,
        "label_mapping": None if mapping is None else {str(k): v for k, v in mapping.items()},
        "inverse_label_mapping": None if mapping is None else {str(v): k for k, v in mapping.items()},
        "num_classes": num_classes,
        "subjects": subjects,
        "skipped": [{"id": sid, "error": msg} for sid, msg in failed],
    }
    _write_or_say_disk_full(out / "manifest.json", lambda: write_json_atomic(out / "manifest.json", manifest))
    return manifest
