"""A labelled data set (`TaskData`), as fine-tuning, evaluation, the study and the demo read it."""

import dataclasses
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import DataError
from keras_ssl3d.names import FINETUNE_INPUT_SIZE


@dataclasses.dataclass
class TaskData:
    """A labelled data set: 3D volumes + label maps, or 2D images + grades.

    ``samples`` serves subject ``i`` as ``image(i)`` / ``label(i)``: a ``CachedDataset`` in 3D
    (memory-mapped, resized on the fly to ``size``: only the batches in flight are in memory) or an
    ``ArraySource`` in 2D (images small enough for memory).
    """

    task: str  # "segmentation" or "classification"
    samples: object
    size: int
    num_classes: int
    class_names: list
    channel_names: list
    label_mapping: dict | None = None
    subject_ids: list | None = None
    path: str = ""

    def __len__(self):
        return len(self.samples)


def detect_task(path):
    """``"segmentation"`` for volume data (NIfTI layouts, caches), ``"classification"`` for image folders."""
    from keras_ssl3d.data import is_cache
    from keras_ssl3d.data.images2d import IMAGE_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise DataError("data path does not exist", path=path)
    if path.is_file() or is_cache(path):
        return "segmentation"
    names = [p.name.lower() for p in path.rglob("*") if p.is_file()]
    if any(n.endswith((".nii", ".nii.gz")) for n in names) or (path / "dataset.json").is_file():
        return "segmentation"
    if any(n.endswith(IMAGE_SUFFIXES) for n in names):
        return "classification"
    raise DataError("no NIfTI volumes or PNG/JPEG images found", path=path)


def load_task_data(path, size=None, task=None, cache_dir=None, cache_root=None, workers=1, echo=None):
    """A labelled data set for fine-tuning or evaluation (``size``: 128 for 3D, 224 for 2D).

    3D data are streamed from a cache: a raw data set is preprocessed once into ``cache_dir``
    (default: under ``cache_root``, see ``ensure_cache``) with ``workers`` processes and reused.
    """
    task = task or detect_task(path)
    size = int(size or FINETUNE_INPUT_SIZE[task])
    if task == "segmentation":
        from keras_ssl3d.data import ensure_cache, open_cache

        folder = ensure_cache(path, size, crop_foreground=False, cache_dir=cache_dir, root=cache_root,
                              workers=workers, echo=echo)
        cache = open_cache(folder, size=size, labeled_only=True)
        if not len(cache):
            raise DataError("data set has no label files", path=path)
        num_classes = int(cache.num_classes)
        names = {int(k): str(v) for k, v in (cache.label_names or {}).items()}
        return TaskData(task, cache, size, num_classes, [names.get(k, f"class_{k}") for k in range(num_classes)],
                        [str(m) for m in cache.modalities], cache.label_mapping, cache.subject_ids, str(path))
    from keras_ssl3d.data import load_images_2d
    from keras_ssl3d.data.images2d import list_images_2d
    from keras_ssl3d.data.pipeline import ArraySource

    images, grades = load_images_2d(path, size=size)
    if grades is None:
        raise DataError("images have no grades (add labels.csv or class sub-folders)", path=path)
    if grades.min() < 0:
        raise DataError(f"grades must be >= 0, got {int(grades.min())}", path=path)
    num_classes = max(int(grades.max()) + 1, 2)
    ids = [Path(p).name for p, _ in list_images_2d(path)]
    return TaskData(task, ArraySource(images, grades.astype(np.int32)), size, num_classes,
                    [f"grade_{k}" for k in range(num_classes)], ["red", "green", "blue"], None, ids, str(path))
