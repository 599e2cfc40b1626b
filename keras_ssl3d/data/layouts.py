"""Where the scans of a data set are: BraTS folders, Medical Segmentation Decathlon tasks, plain
folders of NIfTI files, and CSV manifests, all turned into the same list of subjects."""

import json
import re
from pathlib import Path

from keras_ssl3d.data.manifest_csv import csv_files, discover_csv, inside, warn_outside
from keras_ssl3d.data.nifti import is_nifti, nifti_stem
from keras_ssl3d.data.subjects import Dataset, Subject
from keras_ssl3d.errors import DataError, warn_data

LAYOUTS = ("auto", "brats", "msd", "folder", "csv")

# BraTS file suffixes per modality (``x_t1.nii.gz``, ``x-t1n.nii.gz`` or bare ``t1.nii.gz``); the
# BraTS 2023/2024 names (t1n, t1c, t2w, t2f) are aliases, and they also select the 2023 labels.
BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
BRATS_ALIASES = {
    "t1": ("t1", "t1n"),
    "t1ce": ("t1ce", "t1c", "t1gd"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f"),
    "seg": ("seg",),
}
BRATS2023_NAMES = ("t1n", "t1c", "t2w", "t2f")
# Label values of the BraTS label maps: up to 2021 enhancing tumour is 4, from 2023 it is 3.
LABEL_CONVENTIONS = {
    "brats2021": {0: "background", 1: "necrotic/non-enhancing core", 2: "edema", 4: "enhancing tumor"},
    "brats2023": {0: "background", 1: "non-enhancing tumor core", 2: "surrounding FLAIR hyperintensity (edema)",
                  3: "enhancing tumor"},
}
BRATS_LABEL_NAMES = LABEL_CONVENTIONS["brats2021"]
LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_gt")
LABEL_DIRS = ("labels", "labelsTr", "masks", "segmentations")
IMAGE_DIRS = ("images", "imagesTr", "imagesTs")



def discover(path, layout="auto", modalities=None, label_convention=None):
    """Find the subjects of a data set at ``path``.

    ``layout="auto"`` picks the one layout whose markers are present (``dataset.json`` -> msd; a
    ``.csv`` file -> csv; subject folders holding ``*_flair``/``*_t1``... files -> brats; NIfTI
    files at the top or in ``images/`` -> folder) and fails with a clear message when several or
    none match. ``modalities`` selects and orders the channels (names as in the data set).
    ``label_convention`` (``brats2021`` or ``brats2023``) says which label values the label maps use;
    BraTS folders pick it from their file names (``*_t1ce`` -> 2021, ``*-t1c`` -> 2023).
    Folders (and files) that are not taken as subjects are reported, each with the reason, as a
    ``DataWarning``; two subjects with one id are an error naming both.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("data set path not found", path=path)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}", path=path)
    if label_convention is not None and label_convention not in LABEL_CONVENTIONS:
        raise DataError(f"unknown label convention {label_convention!r}; choose one of "
                        f"{', '.join(LABEL_CONVENTIONS)}", path=path)
    if layout == "auto":
        layout = detect_layout(path)
    reader = {"brats": _discover_brats, "msd": _discover_msd, "folder": _discover_folder, "csv": discover_csv}
    dataset = reader[layout](path, modalities)
    if not dataset.subjects:
        raise DataError(f"no subjects found for layout {layout!r}", path=path)
    if all(s.problem for s in dataset.subjects):
        raise DataError(dataset.subjects[0].problem)
    seen = {}
    for s in dataset.subjects:
        if s.id in seen:
            raise DataError(f"two subjects have the id {s.id!r}: {_where(seen[s.id])} and {_where(s)}; rename one",
                            path=path)
        seen[s.id] = s
    if label_convention is not None:
        dataset.label_names = dict(LABEL_CONVENTIONS[label_convention])
        dataset.extra["label_convention"] = label_convention
    elif dataset.extra.get("mixed_names"):
        raise DataError(dataset.extra["mixed_names"], path=path)
    for folder, why in dataset.extra.get("not_subjects", []):
        warn_data(f"not taken as a subject: {why}", path=folder)
    return dataset


def _where(subject):
    """The folder (BraTS) or first file of a subject, to tell two subjects apart in a message."""
    first = subject.image_paths[0] if subject.images else None
    return str(first.parent if subject.images and len(subject.image_paths) > 1 else first)


def detect_layout(path):
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.name == "dataset.json":
            return "msd"
        raise DataError("expected a data set folder, a .csv manifest or a dataset.json", path=path)
    found = []
    if (path / "dataset.json").is_file():
        found.append("msd")
    if csv_files(path):
        found.append("csv")
    if _brats_subject_dirs(path):
        found.append("brats")
    if "msd" not in found and _folder_images(path):
        found.append("folder")
    if not found:
        raise DataError("no data set found (no dataset.json, .csv manifest, BraTS subject folders or "
                        "NIfTI files)", path=path)
    if len(found) > 1:
        raise DataError(f"ambiguous data set layout: looks like {' and '.join(found)}; pass --layout "
                        f"{{{','.join(found)}}}", path=path)
    return found[0]


def _nifti_files(path):
    """NIfTI files of a folder; a broken symbolic link is kept, so reading it names the link."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir()
                  if (p.is_file() or p.is_symlink()) and is_nifti(p) and not p.name.startswith("."))


def _folder_images(path):
    files = _nifti_files(path)
    for d in IMAGE_DIRS:
        files += _nifti_files(path / d)
    return files


# ---------------------------------------------------------------- BraTS


def _brats_role(stem):
    """Which BraTS role (t1, t1ce, ..., seg) a file stem has, from its last ``_``/``-`` part or the whole
    (bare) name."""
    m = re.search(r"[_-]([A-Za-z0-9]+)$", stem)
    tail = (m.group(1) if m else stem).lower()
    for role, names in BRATS_ALIASES.items():
        if tail in names:
            return role
    return None


def _brats_folders(path, not_subjects=None):
    """``{folder: {role: [files]}}`` for the sub-folders of ``path`` holding BraTS-named NIfTI files.

    ``not_subjects``: a list that gets ``(folder or file, why)`` for everything else at the top of ``path``.
    """
    found = {}
    for d in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
        if not d.is_dir():
            if not_subjects is not None and is_nifti(d):
                not_subjects.append((d, "a NIfTI file beside the subject folders (BraTS reads one folder per "
                                        "subject)"))
            continue
        roles = {}
        niftis = _nifti_files(d)
        for f in niftis:
            role = _brats_role(nifti_stem(f))
            if role is not None:
                roles.setdefault(role, []).append(f)
        if roles:
            found[d] = roles
        elif not_subjects is not None:
            names = ", ".join(f.name for f in niftis[:3]) + (", ..." if len(niftis) > 3 else "")
            not_subjects.append((d, f"none of its NIfTI files ({names}) has a BraTS modality name (t1, t1ce, t2, "
                                    "flair, seg or the 2023 t1n, t1c, t2w, t2f)" if niftis else
                                 "it holds no NIfTI files"))
    return found


def _brats_subject_dirs(path):
    """Folders that look like one BraTS subject: two or more modalities, each under one name.

    A file present twice (``x_t1.nii`` and ``x_t1.nii.gz``) still makes a subject folder, so
    ``_discover_brats`` reports it; a folder of many subjects' ``*_t1`` files (different names) is not one.
    """
    return [d for d, roles in _brats_folders(path).items()
            if len(set(roles) & set(BRATS_MODALITIES)) >= 2
            and all(len({nifti_stem(f).lower() for f in files}) == 1 for files in roles.values())]


def _discover_brats(path, modalities):
    modalities = [m.lower() for m in (modalities or BRATS_MODALITIES)]
    for m in modalities:
        if m not in BRATS_ALIASES or m == "seg":
            raise DataError(f"unknown BraTS modality {m!r}; choose from {', '.join(BRATS_MODALITIES)}", path=path)
    subjects = []
    if not _brats_subject_dirs(path):
        raise DataError("no BraTS subject folders (with *_t1/_t1ce/_t2/_flair files) found", path=path)
    not_subjects = []
    styles = {}  # file-name style -> a folder using it (2021 or 2023 names)
    # Every folder with a BraTS-named file is a subject, complete or not: none is dropped unreported.
    for d in _brats_folders(path, not_subjects):
        files = {}
        problem = None
        for f in _nifti_files(d):
            role = _brats_role(nifti_stem(f))
            if role is not None and role != "seg":
                tail = re.split(r"[_-]", nifti_stem(f))[-1].lower()
                styles.setdefault("brats2023" if tail in BRATS2023_NAMES else "brats2021", d)
            if role is not None:
                if role in files and problem is None:
                    problem = str(DataError(f"two files for {role}: {files[role].name} and {f.name} "
                                            "(keep one)", path=d))
                files.setdefault(role, f)
        missing = [m for m in modalities if m not in files]
        if missing and problem is None:
            problem = str(DataError(f"missing modality {', '.join(missing)} (have {', '.join(sorted(files))})",
                                    path=d))
        subjects.append(Subject(id=d.name, images={m: files[m] for m in modalities if m in files},
                                label=files.get("seg"), problem=problem))
    convention = next(iter(styles), "brats2021")
    ds = Dataset(subjects=subjects, modalities=modalities, label_names=dict(LABEL_CONVENTIONS[convention]),
                 layout="brats", root=path)
    ds.extra["label_convention"] = convention
    ds.extra["not_subjects"] = not_subjects
    if len(styles) > 1:  # an error unless --label-convention says which labels the maps hold
        ds.extra["mixed_names"] = (f"mixes BraTS 2021 file names ({styles['brats2021'].name}) and BraTS 2023 names "
                                   f"({styles['brats2023'].name}), whose label values differ (enhancing tumor 4 or "
                                   "3); keep one release per folder or pass --label-convention brats2021|brats2023")
    return ds


# ---------------------------------------------------------------- MSD


def _discover_msd(path, modalities):
    json_path = path if path.is_file() else path / "dataset.json"
    root = json_path.parent
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"unreadable dataset.json ({e})", path=json_path) from None
    if not isinstance(meta, dict):
        raise DataError("dataset.json is not a JSON object", path=json_path)
    if "training" not in meta and "channel_names" in meta:
        return _discover_nnunet(root, meta, json_path, modalities)
    raw_mods = meta.get("modality") or {"0": "image"}
    try:
        all_mods = [str(raw_mods[k]) for k in sorted(raw_mods, key=int)]
        label_names = {int(k): str(v) for k, v in (meta.get("labels") or {}).items()} or None
    except (ValueError, AttributeError, TypeError):
        raise DataError("dataset.json: 'modality' and 'labels' must map integer keys to names",
                        path=json_path) from None
    select = _select_modalities(all_mods, modalities, json_path)

    def resolve(p):
        return root / str(p)

    subjects = []
    outside = []
    for entry in meta.get("training", []):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError("dataset.json: each 'training' entry needs 'image' (and 'label')", path=json_path)
        img = resolve(entry["image"])
        label = resolve(entry["label"]) if entry.get("label") else None
        subjects.append(Subject(id=nifti_stem(img), images={m: img for m in select}, label=label, split="train"))
    for entry in meta.get("test", []):
        img = resolve(entry["image"] if isinstance(entry, dict) else entry)
        subjects.append(Subject(id=nifti_stem(img), images={m: img for m in select}, label=None, split="test"))
    for n, s in enumerate(subjects):
        outside += [(n + 1, p) for p in [*s.image_paths, s.label] if p is not None and not inside(p, root)]
    warn_outside([(f"entry {n}", p) for n, p in outside], root, json_path)
    ds = Dataset(subjects=subjects, modalities=select, label_names=label_names, layout="msd", root=root)
    if select != all_mods:
        # 4D files hold every modality: remember which channels to keep.
        ds.extra["channel_indices"] = [all_mods.index(m) for m in select]
    ds.extra["all_modalities"] = all_mods
    return ds


def _discover_nnunet(root, meta, json_path, modalities):
    """nnU-Net v2 raw data: ``imagesTr/case_0000.nii.gz`` per channel, labels by case name."""
    try:
        chans = meta["channel_names"]
        all_mods = [str(chans[k]) for k in sorted(chans, key=int)]
        label_names = {int(v): str(k) for k, v in meta.get("labels", {}).items()} or None
    except (ValueError, TypeError, AttributeError):
        raise DataError("dataset.json: bad 'channel_names' or 'labels'", path=json_path) from None
    ds = _discover_folder(root, None)
    select = _select_modalities(all_mods, modalities, json_path)
    for s in ds.subjects:
        if len(s.images) != len(all_mods):
            raise DataError(f"subject {s.id}: {len(s.images)} channel files, dataset.json names {len(all_mods)}",
                            path=json_path)
        files = list(s.images.values())
        s.images = {m: files[all_mods.index(m)] for m in select}
    return Dataset(subjects=ds.subjects, modalities=select, label_names=label_names, layout="msd", root=root)


def _select_modalities(all_mods, modalities, where):
    if not modalities:
        return list(all_mods)
    lower = {m.lower(): m for m in all_mods}
    out = []
    for m in modalities:
        if m.lower() not in lower:
            raise DataError(f"missing modality {m!r} (data set has {', '.join(all_mods)})", path=where)
        out.append(lower[m.lower()])
    return out


# ---------------------------------------------------------------- plain folder


def _split_label(stem):
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return None


def _discover_folder(path, modalities):
    """Images and labels matched by name.

    Labels: files in ``labels/``/``labelsTr/`` with the image's case name, or files named
    ``<case>_seg`` (``_label``, ``_mask``...). Several files per case are channels when named
    ``<case>_0000``, ``<case>_0001``... (nnU-Net) or ``<case>_<modality>`` for ``modalities``.
    """
    if path.is_file():
        if not is_nifti(path):
            raise DataError("not a NIfTI file or data set folder", path=path)
        return Dataset(subjects=[Subject(id=nifti_stem(path), images={"image": path})], modalities=["image"],
                       layout="folder", root=path.parent)
    wanted = [m for m in (modalities or [])]
    cases = {}  # case -> {modality: path}
    labels = {}
    splits = {}
    for d, split in [(path, None), (path / "images", None), (path / "imagesTr", "train"), (path / "imagesTs", "test")]:
        for f in _nifti_files(d):
            stem = nifti_stem(f)
            base = _split_label(stem)
            if base is not None:
                labels[base] = f
                continue
            case, mod = stem, "image"
            m = re.match(r"^(.*)_(\d{4})$", stem)
            if m:
                case, mod = m.group(1), m.group(2)
            elif wanted:
                for w in wanted:
                    if stem.lower().endswith("_" + w.lower()):
                        case, mod = stem[: -len(w) - 1], w
                        break
            if mod in cases.setdefault(case, {}):
                raise DataError(f"two image files for case {case!r}: {cases[case][mod].name} and {f.name}", path=path)
            cases[case][mod] = f
            if split:
                splits[case] = split
    for d in LABEL_DIRS:
        for f in _nifti_files(path / d):
            stem = nifti_stem(f)
            labels[_split_label(stem) or stem] = f
    if not cases:
        raise DataError("no NIfTI images found", path=path)
    read = set(IMAGE_DIRS) | set(LABEL_DIRS)
    not_subjects = [(d, f"the folder layout reads NIfTI files at the top and in {', '.join(IMAGE_DIRS)} (labels in "
                        f"{', '.join(LABEL_DIRS)}), not in other sub-folders")
                    for d in sorted(path.iterdir()) if d.is_dir() and d.name not in read and not d.name.startswith(".")]
    all_mods = sorted({m for mods in cases.values() for m in mods})
    if wanted:
        numbered = all(re.fullmatch(r"\d{4}", m) for m in all_mods)
        if numbered and len(wanted) == len(all_mods):
            rename = dict(zip(all_mods, wanted))
            cases = {c: {rename[m]: p for m, p in mods.items()} for c, mods in cases.items()}
        mod_order = wanted
    else:
        mod_order = all_mods
    subjects = []
    for case in sorted(cases):
        mods = cases[case]
        missing = [m for m in mod_order if m not in mods]
        problem = None
        if missing:
            where = next(iter(mods.values())).parent
            problem = str(DataError(f"case {case!r}: missing modality {', '.join(missing)}", path=where))
        subjects.append(Subject(id=case, images={m: mods[m] for m in mod_order if m in mods},
                                label=labels.get(case), split=splits.get(case), problem=problem))
    ds = Dataset(subjects=subjects, modalities=list(mod_order), label_names=None, layout="folder", root=path)
    ds.extra["not_subjects"] = not_subjects
    return ds


