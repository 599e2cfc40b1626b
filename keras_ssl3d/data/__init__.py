"""Medical data: NIfTI reading, data set layouts, the paper's preprocessing, the cache, the input
pipeline and built-in synthetic data.

The commands stream: ``ensure_cache`` preprocesses a raw data set once, ``CachedDataset`` reads its
subjects lazily and ``VolumeBatches`` makes the batches. The ``load_*_volumes`` helpers below stack
a whole (small) data set in memory, for notebooks and the API examples.
"""

import dataclasses
from pathlib import Path

import numpy as np

from keras_ssl3d.data.cache import CachedDataset, default_cache_dir, ensure_cache, is_cache, open_cache
from keras_ssl3d.data.images2d import load_images_2d
from keras_ssl3d.data.layouts import discover
from keras_ssl3d.data.subjects import Dataset, Subject
from keras_ssl3d.data.nifti import Volume, load_volume, save_label_map
from keras_ssl3d.data.preprocess import (
    crop_to_foreground,
    label_mapping_for,
    labels_to_original,
    preprocess_dataset,
    preprocess_subject,
    remap_labels,
    resize_labels,
    resize_volume,
    scale_intensity,
)
from keras_ssl3d.errors import DataError


def __getattr__(name):
    # The pipeline imports Keras: load it only when asked for.
    if name in ("VolumeBatches", "ArraySource"):
        from keras_ssl3d.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_ssl3d.data' has no attribute {name!r}")


def stack_images(images, sources):
    """``np.stack`` of per-subject ``(S, S, S, C)`` images, refusing subjects with another channel count.

    Such a data set would otherwise fail much later in numpy or Keras ("all input arrays must have
    the same shape"); this names the first odd subject's file instead.
    """
    first = images[0].shape[-1] if images else None
    for image, source in zip(images, sources):
        if image.shape[-1] != first:
            raise DataError(f"has {image.shape[-1]} channel(s), the first subject ({Path(str(sources[0])).name}) has "
                            f"{first}: every subject needs the same modalities", path=source)
    return np.stack(images).astype(np.float32)


def _raw_kwargs(dataset):
    kw = {"label_mapping": label_mapping_for(dataset.label_names),
          "channel_indices": dataset.extra.get("channel_indices")}
    if dataset.layout == "msd" and not kw["channel_indices"]:
        kw["expected_channels"] = len(dataset.extra.get("all_modalities", [])) or None
    return kw


def open_unlabeled(path, size, rank=3, cache_dir=None, cache_root=None, workers=1, echo=None):
    """The unlabeled samples of ``path`` for pretraining, read lazily.

    3D: a raw data set is preprocessed once into a cache (foreground crop, as the paper does for
    self-supervised pretraining; see ``ensure_cache``) and streamed from it, resized to ``size`` if the
    cache was made at another size. 2D: the images are loaded (an ``ArraySource``).
    """
    if rank == 3:
        folder = ensure_cache(path, size, crop_foreground=True, cache_dir=cache_dir, root=cache_root,
                              workers=workers, echo=echo)
        return open_cache(folder, size=size)
    from keras_ssl3d.data.pipeline import ArraySource

    return ArraySource(load_images_2d(path, size=size)[0])


def load_unlabeled_volumes(path, size=128, crop_foreground=True, layout="auto", modalities=None):
    """All volumes of a cache or raw data set as float32 ``(N, S, S, S, C)`` in [0, 1].

    For a raw data set each subject is preprocessed in memory (foreground crop on by default, as
    for the paper's self-supervised pretraining). A cache is used as it was made (resized if its
    size differs).
    """
    if is_cache(path):
        return open_cache(path, size=size).images()
    dataset = discover(path, layout=layout, modalities=modalities)
    kw = _raw_kwargs(dataset)
    out = []
    for s in dataset.subjects:
        s_nolabel = dataclasses.replace(s, label=None)
        image, _, _ = preprocess_subject(s_nolabel, size=size, crop_foreground=crop_foreground,
                                         channel_indices=kw["channel_indices"],
                                         expected_channels=kw.get("expected_channels"))
        out.append(image)
    return stack_images(out, [s.image_paths[0] for s in dataset.subjects])


def load_labeled_volumes(path, size=128, layout="auto", modalities=None, crop_foreground=False):
    """Labelled volumes of a cache or raw data set.

    Returns ``(images (N, S, S, S, C) float32 in [0, 1], labels (N, S, S, S) uint8, info)``;
    ``info`` holds ``modalities``, ``label_names`` (class -> name), ``num_classes``,
    ``subject_ids``, ``label_mapping`` (raw value -> class, e.g. BraTS 4 -> 3),
    ``inverse_label_mapping`` and per-subject ``subjects`` geometry. Subjects without a label
    file (e.g. MSD test images) are left out.
    """
    if is_cache(path):
        cache = open_cache(path, size=size, labeled_only=True)
        if not len(cache):
            raise DataError("cache holds no labelled subjects", path=path)
        info = {
            "modalities": cache.modalities,
            "label_names": cache.label_names,
            "num_classes": cache.num_classes,
            "subject_ids": cache.subject_ids,
            "label_mapping": cache.label_mapping,
            "inverse_label_mapping": cache.inverse_label_mapping,
            "subjects": list(cache.subjects),
        }
        return cache.images(), cache.labels(), info
    dataset = discover(path, layout=layout, modalities=modalities)
    subjects = dataset.labeled
    if not subjects:
        raise DataError("data set has no label files", path=path)
    if len(subjects) < len(dataset.subjects):
        from keras_ssl3d.errors import warn_data

        unlabeled = [s.id for s in dataset.subjects if s.label is None]
        warn_data(f"{len(unlabeled)} subject(s) without a label file are left out of the labelled subjects "
                  f"({', '.join(unlabeled[:5])}{', ...' if len(unlabeled) > 5 else ''})", path=path)
    kw = _raw_kwargs(dataset)
    images, labels, infos = [], [], []
    for s in subjects:
        image, label, sinfo = preprocess_subject(s, size=size, crop_foreground=crop_foreground, **kw)
        images.append(image)
        labels.append(label)
        infos.append(sinfo)
    mapping = kw["label_mapping"]
    if mapping is not None:
        label_names = {mapping[k]: v for k, v in dataset.label_names.items()}
        num_classes = len(mapping)
    else:
        label_names = None
        num_classes = int(max(max(i["label_values"]) for i in infos)) + 1
    channels = images[0].shape[-1]
    modalities = list(dataset.modalities)
    if len(modalities) != channels:
        modalities = [f"{modalities[0]}_{i}" for i in range(channels)]
    info = {
        "modalities": modalities,
        "label_names": label_names,
        "num_classes": num_classes,
        "subject_ids": [s.id for s in subjects],
        "label_mapping": mapping,
        "inverse_label_mapping": None if mapping is None else {v: k for k, v in mapping.items()},
        "subjects": infos,
    }
    return stack_images(images, [s.image_paths[0] for s in subjects]), np.stack(labels).astype(np.uint8), info


__all__ = [
    "ArraySource", "CachedDataset", "DataError", "Dataset", "Subject", "Volume", "crop_to_foreground",
    "default_cache_dir", "discover", "ensure_cache", "open_unlabeled",
    "labels_to_original", "load_images_2d", "load_labeled_volumes", "load_unlabeled_volumes", "load_volume",
    "open_cache", "preprocess_dataset", "preprocess_subject", "remap_labels", "resize_labels", "resize_volume",
    "save_label_map", "scale_intensity", "VolumeBatches",
]
