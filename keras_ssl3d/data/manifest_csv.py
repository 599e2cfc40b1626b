"""CSV manifests: one row per subject, image columns holding NIfTI paths relative to the CSV's folder (UK Biobank
style exports with ``eid``, age, sex... columns; ``,`` ``;`` or tab). Also the check, shared with MSD's
``dataset.json``, that a manifest's paths stay inside the data folder."""

import csv
from pathlib import Path

from keras_ssl3d.data.nifti import is_nifti, nifti_stem
from keras_ssl3d.data.subjects import Dataset, Subject
from keras_ssl3d.errors import DataError, warn_data

ID_COLUMNS = ("id", "subject", "subject_id", "case", "case_id", "name", "eid")
LABEL_COLUMNS = ("label", "seg", "segmentation", "mask", "labels")


def csv_files(path):
    """The CSV manifests of a folder (``labels.csv`` holds 2D grades, not scans)."""
    return sorted(p for p in path.glob("*.csv") if p.is_file() and p.name != "labels.csv")


def discover_csv(path, modalities):
    """A CSV manifest: one row per subject; image columns hold NIfTI paths relative to the CSV's folder.

    Known columns: an id (``id``, ``subject``, ``eid``...), a label (``label``, ``seg``...), ``split``, and the
    image columns (those holding ``.nii``/``.nii.gz`` paths, or the ``modalities`` asked for); any
    other column (age, sex...) is named in a warning and not read. The delimiter (``,`` ``;`` tab)
    is detected.
    """
    if path.is_dir():
        files = csv_files(path)
        if len(files) != 1:
            raise DataError(f"expected one .csv manifest, found {len(files)}", path=path)
        path = files[0]
    rows = read_csv_rows(path, "CSV manifest")
    columns = [c.strip() for c in rows[0].keys() if c is not None]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
    lower = {c.lower(): c for c in columns}
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    label_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    skip = {id_col, label_col, lower.get("split")}
    mod_cols = [c for c in columns if c not in skip and any(is_nifti(row.get(c, "")) for row in rows)]
    if modalities:
        for m in modalities:
            if m not in columns and m.lower() not in lower:
                raise DataError(f"missing modality column {m!r} (columns: {', '.join(columns)})", path=path)
        mod_cols = [m if m in columns else lower[m.lower()] for m in modalities]
    if not mod_cols:
        raise DataError(f"CSV manifest has no image columns (no column holds .nii/.nii.gz paths; columns: "
                        f"{', '.join(columns)})", path=path)
    unread = [c for c in columns if c not in skip and c not in mod_cols]
    if unread:
        several = len(unread) > 1
        warn_data(f"column{'s' if several else ''} {', '.join(unread)} {'are' if several else 'is'} not read (neither "
                  "images, id, label nor split)", path=path)
    root = path.parent
    subjects = []
    outside = []
    for n, row in enumerate(rows, start=2):
        images = {}
        for c in mod_cols:
            if not row.get(c):
                raise DataError(f"line {n}: missing modality {c!r}", path=path)
            images[c] = root / row[c]
        sid = row.get(id_col) if id_col else None
        sid = sid or nifti_stem(images[mod_cols[0]])
        label = root / row[label_col] if label_col and row.get(label_col) else None
        outside += [(n, p) for p in [*images.values(), label] if p is not None and not inside(p, root)]
        subjects.append(Subject(id=sid, images=images, label=label, split=row.get("split") or None))
    warn_outside(outside, root, path)
    return Dataset(subjects=subjects, modalities=mod_cols, label_names=None, layout="csv", root=root)


def inside(p, root):
    """Whether ``p`` (resolved) lies inside ``root``."""
    try:
        Path(p).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def warn_outside(outside, root, manifest):
    """Paths of a manifest leading outside the data folder (``../``, absolute) are read, but said."""
    if outside:
        where, first = outside[0]
        where = f"line {where}" if isinstance(where, int) else where
        warn_data(f"{len(outside)} path(s) lead outside the data folder {root} (e.g. {where}: {first}); they are "
                  "read as given", path=manifest)


def read_csv_rows(path, what):
    """All rows of a CSV file as dicts (delimiter ``,`` ``;`` or tab, detected); a one-line ``DataError``
    naming ``what`` when unreadable or empty."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(1 << 16)
            f.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t").delimiter
            except csv.Error:  # one column: no delimiter to find
                delimiter = ","
            rows = list(csv.DictReader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"unreadable {what} ({e})", path=path) from None
    if not rows:
        raise DataError(f"{what} has no rows", path=path)
    return rows
