"""The one description of a data set's scans before they are read: `Subject` (one scan's files) and `Dataset`
(the subjects a layout found), whatever the layout (``keras_ssl3d.data.layouts``)."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Subject:
    """One scan: ``images`` maps modality name -> file (several names may share one 4D file)."""

    id: str
    images: dict
    label: Path = None
    split: str = None
    # Why this subject cannot be used (e.g. a missing modality); reported when it is loaded, so a
    # data set with a few bad subjects can still be processed with ``skip_bad``.
    problem: str = None

    @property
    def image_paths(self):
        """The distinct image files in modality order (what ``load_volume`` reads)."""
        return list(dict.fromkeys(Path(p) for p in self.images.values()))

    @property
    def single_channel_paths(self):
        """Files named for exactly one modality (BraTS ``*_t1``, ``*_0000``, CSV columns): one channel each.

        A file shared by several modalities (MSD 4D) or the unnamed ``image`` of a folder may hold many.
        """
        names = {}
        for name, p in self.images.items():
            names.setdefault(Path(p), []).append(name)
        return [p for p, n in names.items() if len(n) == 1 and n[0] != "image"]


@dataclass
class Dataset:
    subjects: list
    modalities: list
    label_names: dict = None
    layout: str = "folder"
    root: Path = None
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.subjects)

    @property
    def labeled(self):
        return [s for s in self.subjects if s.label is not None]
