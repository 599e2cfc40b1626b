"""2D image folders (fundus photographs): PNG/JPEG files with grades from ``labels.csv`` or
sub-folder names."""

from pathlib import Path

import numpy as np

from keras_ssl3d.data.manifest_csv import read_csv_rows
from keras_ssl3d.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FILE_COLUMNS = ("image", "file", "filename", "path", "id_code", "id", "name")
GRADE_COLUMNS = ("grade", "label", "level", "diagnosis", "class")


def _is_image(p):
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _find(root, name):
    p = root / name
    if p.is_file():
        return p
    for suffix in IMAGE_SUFFIXES:  # Kaggle CSVs name images without extension
        q = root / f"{name}{suffix}"
        if q.is_file():
            return q
    raise DataError(f"image {name!r} listed in labels.csv not found", path=root)


def list_images_2d(path):
    """``[(file, grade or None)]`` for a folder: ``labels.csv``, class sub-folders, or plain files."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("not a folder of images", path=root)
    csv_path = root / "labels.csv"
    if csv_path.is_file():
        rows = read_csv_rows(csv_path, "labels.csv")
        lower = {k.strip().lower(): k for k in rows[0] if k}
        fcol = next((lower[c] for c in FILE_COLUMNS if c in lower), None)
        gcol = next((lower[c] for c in GRADE_COLUMNS if c in lower), None)
        if fcol is None or gcol is None:
            raise DataError(f"labels.csv needs an image column ({'/'.join(FILE_COLUMNS)}) and a grade column "
                            f"({'/'.join(GRADE_COLUMNS)})", path=csv_path)
        items = []
        for n, row in enumerate(rows, start=2):
            try:
                grade = int(float(row[gcol]))
            except (TypeError, ValueError):
                raise DataError(f"line {n}: grade {row[gcol]!r} is not an integer", path=csv_path) from None
            items.append((_find(root, row[fcol].strip()), grade))
        return items
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and any(_is_image(p) for p in d.iterdir()))
    if subdirs:
        names = [d.name for d in subdirs]
        numeric = all(n.isdigit() for n in names)
        items = []
        for k, d in enumerate(subdirs):
            grade = int(d.name) if numeric else k
            items += [(p, grade) for p in sorted(d.iterdir()) if _is_image(p)]
        return items
    files = sorted(p for p in root.iterdir() if _is_image(p))
    if not files:
        raise DataError("no PNG/JPEG images found", path=root)
    return [(p, None) for p in files]


def load_image_2d(path, size=224):
    """One image as float32 ``(S, S, 3)`` in [0, 1] (bilinear resize, grey -> RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"unreadable image ({e})", path=path) from None


def load_images_2d(path, size=224):
    """Load a folder of 2D images: ``(images (N, S, S, 3) float32 in [0, 1], grades (N,) or None)``."""
    items = list_images_2d(path)
    images = np.stack([load_image_2d(p, size) for p, _ in items])
    grades = None if items[0][1] is None else np.asarray([g for _, g in items], dtype=np.int64)
    return images, grades
