"""NIfTI reading and writing: channels-last float32 arrays in RAS, and label maps written back in
the geometry of the scan they were predicted from."""

import errno
import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import DataError
from keras_ssl3d.fileio import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def is_nifti(path):
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path):
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@dataclass
class Volume:
    """A scan as the models see it, plus what is needed to write results back.

    ``array`` is float32 ``(D, H, W, C)`` with its first three axes in RAS order; ``affine`` maps
    those voxel indices to world millimetres. ``original_shape`` / ``original_affine`` describe
    the file on disk (spatial part only), so ``save_label_map`` can undo the reorientation.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple
    original_shape: tuple
    original_affine: np.ndarray
    path: object = None
    paths: list = field(default_factory=list)

    @property
    def shape(self):
        return self.array.shape

    @property
    def num_channels(self):
        return self.array.shape[-1]


def _nib():
    import nibabel

    return nibabel


# Deflate cannot shrink data more than ~1032:1, so a header promising more is lying about the file.
GZIP_MAX_RATIO = 1100
# One scan's voxels, as stored, above this are refused (a corrupt header or a decompression bomb);
# KERAS_SSL3D_MAX_SCAN_GB raises it for the rare real scan that large.
MAX_SCAN_GB = 8.0


def _read(path):
    """Load the header and the raw voxel array of one file; bad files raise a one-line DataError."""
    nib = _nib()
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        raise DataError("is a folder, expected a .nii or .nii.gz file", path=path)
    if path.stat().st_size == 0:
        raise DataError("empty file (0 bytes): the download or copy did not happen", path=path)
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError as e:
        why = "named .gz but not gzip-compressed" if "gzip" in str(e) else "unrecognised header"
        raise DataError(f"not a NIfTI file ({why})", path=path) from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise DataError(f"unreadable or corrupt file ({_short(e)})", path=path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"not a NIfTI file (nibabel read it as {type(img).__name__})", path=path)
    check_voxel_type(img.header.get_data_dtype(), path)
    stored = _check_declared_size(img.header, path)
    if str(path).lower().endswith(".gz"):
        # The one full read: checked, then handed to nibabel (no second decompression).
        img = type(img).from_bytes(verify_gzip(path, limit=stored + (1 << 20)))
    check_affine(img.affine, path)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise DataError(f"corrupt or truncated voxel data ({_short(e)})", path=path) from None
    return img, data


def _check_exists(path):
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError("symbolic link loop (following its links leads back to itself); replace it with a link "
                            "to the real file", path=path) from None
        if path.is_symlink():
            raise DataError(f"broken symbolic link (its target {os.readlink(path)} does not exist)",
                            path=path) from None
        raise DataError("file not found", path=path) from None


def check_voxel_type(dtype, path):
    """Only real scalar voxels are images: complex or RGB data would be cut down to a number silently."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        raise DataError(f"has RGB/structured voxels ({', '.join(dtype.names)}), expected one real number per voxel; "
                        "convert it to grey values (or one channel per file) first", path=path)
    if dtype.kind == "c":
        raise DataError(f"has complex-valued voxels ({dtype}): the imaginary part would be lost; save the magnitude "
                        "(or the real part) as a real-valued NIfTI first", path=path)
    if dtype.kind not in "iuf":
        raise DataError(f"has voxels of type {dtype}, expected real numbers (integer or float)", path=path)


def _size_text(n):
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _check_declared_size(header, path):
    """Bytes of voxel data the header declares, checked against the file before anything is allocated.

    A header claiming more than the file can hold is corrupt (not a machine too small); one claiming
    more than ``KERAS_SSL3D_MAX_SCAN_GB`` is refused before decompressing (a gzip bomb).
    """
    shape = tuple(int(n) for n in header.get_data_shape())
    nbytes = int(np.prod(shape, dtype=np.float64)) * header.get_data_dtype().itemsize
    offset = int(header.get("vox_offset", 0) or 0)
    size = path.stat().st_size
    declared = f"its header declares {'x'.join(str(n) for n in shape)} voxels of {header.get_data_dtype()} " \
               f"({_size_text(nbytes)})"
    gz = str(path).lower().endswith(".gz")
    if (offset + nbytes > size * GZIP_MAX_RATIO) if gz else (offset + nbytes > size):
        raise DataError(f"corrupt: {declared} but the file ({_size_text(size)}) cannot hold them (header size "
                        "inconsistent with file size)", path=path)
    limit_gb = float(os.environ.get("KERAS_SSL3D_MAX_SCAN_GB") or MAX_SCAN_GB)
    if nbytes > limit_gb * 1e9:
        raise DataError(f"refused: {declared}, over the {limit_gb:g} GB limit for one scan (a corrupt header or a "
                        "decompression bomb; set KERAS_SSL3D_MAX_SCAN_GB to read a real scan this large)", path=path)
    return offset + nbytes


def verify_gzip(path, limit=None):
    """Decompress the whole file, so gzip checks every member's CRC and length (nibabel stops before);
    returns the decompressed bytes.

    ``limit``: the most bytes the file may expand to (its header's voxel data); more is refused
    before it fills the memory.
    """
    data = bytearray()
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                data += chunk
                if limit is not None and len(data) > limit:
                    raise DataError(f"refused: the gzip stream expands beyond the {_size_text(limit)} its header "
                                    "declares (corrupt or a decompression bomb)", path=path)
    except EOFError:
        raise DataError("corrupt or truncated gzip file (the download or copy is incomplete)", path=path) from None
    except (OSError, zlib.error) as e:
        raise DataError(f"corrupt gzip file ({_short(e)}): the data are damaged; copy or download it again",
                        path=path) from None
    return bytes(data)


def check_affine(affine, path):
    """The header's affine must map voxels to millimetres invertibly, or no orientation can be read from it."""
    affine = np.asarray(affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise DataError("the header's affine (sform/qform) contains NaN/Inf: voxel positions are undefined; "
                        "fix the header's sform/qform", path=path)
    if not linear.any():
        raise DataError("the header's affine (sform/qform) is all zeros: voxel spacing and orientation are "
                        "undefined; fix the header's sform/qform", path=path)
    scale = float(np.abs(linear).max())
    if abs(np.linalg.det(linear / scale)) < 1e-6:
        raise DataError("the header's affine (sform/qform) is singular (its 3x3 part has determinant 0, so "
                        "two voxel axes map to the same direction); fix the header's sform/qform", path=path)


def _short(e):
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def _as_channels_last(data, path):
    """(X, Y, Z) or (X, Y, Z, C) (or (X, Y, Z, 1, C) as some tools write) -> (X, Y, Z, C)."""
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim < 3 or (data.ndim >= 3 and min(data.shape[:3]) == 1):
        raise DataError(f"is a 2D image (shape {tuple(data.shape)}), expected a 3D volume", path=path)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise DataError(f"has {data.ndim} dimensions (shape {tuple(data.shape)}), expected 3D or 4D", path=path)
    return data


def _orientation(affine):
    return _nib().orientations.io_orientation(affine)


def _to_ras(array, affine):
    """Reorder/flip the first three axes of ``array`` to RAS; return it with its new affine."""
    nib = _nib()
    ornt = _orientation(affine)
    if np.array_equal(ornt, RAS):
        return array, np.asarray(affine, dtype=np.float64)
    spatial = array.shape[:3]
    out = nib.orientations.apply_orientation(array, ornt)  # a view (flips / transposes)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    return out, new_affine


def _from_ras(array, original_affine):
    """Inverse of ``_to_ras``: put a RAS-ordered array back into the file's voxel order."""
    nib = _nib()
    ornt = _orientation(original_affine)
    if np.array_equal(ornt, RAS):
        return array
    back = nib.orientations.ornt_transform(RAS, ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, back))


def check_finite_nonzero(array, path):
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataError(f"contains {bad} NaN/Inf voxels", path=path)
    if not np.any(array):
        raise DataError("is all zeros (empty volume)", path=path)


def _load_one(path):
    """Header and raw channels-last array (file dtype, no copy): checked, converted later."""
    img, data = _read(path)
    data = _as_channels_last(data, path)
    if np.issubdtype(data.dtype, np.floating):
        check_finite_nonzero(data, path)
    elif not np.any(data):  # integers cannot be NaN: only the (cheaper) empty check
        raise DataError("is all zeros (empty volume)", path=path)
    return img, data


def load_volume(path_or_paths, single_channel=None):
    """Load one NIfTI file (3D or 4D) or a list of co-registered files stacked as channels.

    Returns a :class:`Volume` whose array is float32 ``(D, H, W, C)`` in RAS order. All files of
    a list must share the spatial shape and affine (registered modalities, early fusion).
    ``single_channel``: the files that each stand for one modality and so must be 3D (or 4D with one
    volume); by default every file of a list of several files, none for a single file.
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not paths:
        raise DataError("no image files given")
    # The same file listed for several modalities (MSD 4D images) is read once.
    unique = list(dict.fromkeys(Path(p) for p in paths))
    single = set(unique if len(unique) > 1 else []) if single_channel is None else {Path(p) for p in single_channel}
    arrays = []  # raw file arrays; converted to float32 once, while reorienting
    first_img = None
    for p in unique:
        img, array = _load_one(p)
        if p in single and array.shape[-1] != 1:
            raise DataError(f"has {array.shape[-1]} volumes along its 4th axis (shape {tuple(img.shape)}); a file "
                            "holding one modality must be 3D (or 4D with a single volume)", path=p)
        if first_img is None:
            first_img, first_path = img, p
        else:
            if array.shape[:3] != arrays[0].shape[:3]:
                raise DataError(
                    f"shape {array.shape[:3]} differs from {arrays[0].shape[:3]} of {first_path.name} "
                    "(modalities must be co-registered)", path=p)
            if not np.allclose(img.affine, first_img.affine, atol=1e-3, rtol=1e-4):
                raise DataError(
                    f"affine differs from that of {first_path.name} (modalities must be co-registered)", path=p)
        arrays.append(array)
    affine = np.asarray(first_img.affine, dtype=np.float64)
    # One pass: reorient (views) and convert each file into the stacked float32 output.
    views = [_to_ras(a, affine) for a in arrays]
    ras_affine = views[0][1]
    channels = sum(a.shape[-1] for a in arrays)
    ras = np.empty(views[0][0].shape[:3] + (channels,), dtype=np.float32)
    c = 0
    for view, _ in views:
        ras[..., c:c + view.shape[-1]] = view
        c += view.shape[-1]
    spacing = tuple(float(s) for s in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(
        array=ras,
        affine=ras_affine,
        spacing=spacing,
        original_shape=tuple(int(s) for s in arrays[0].shape[:3]),
        original_affine=affine,
        path=unique[0],
        paths=unique,
    )


def load_label_volume(path, reference=None):
    """Load an integer label map into RAS order (``(D, H, W)`` int32), checked against ``reference``."""
    img, data = _read(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        if data.ndim < 3 or min(data.shape) == 1:
            raise DataError(f"is a 2D image (shape {tuple(data.shape)}), expected a 3D label map", path=path)
        raise DataError(f"label map has shape {tuple(data.shape)}, expected 3D", path=path)
    if min(data.shape) == 1:
        raise DataError(f"is a 2D image (shape {tuple(data.shape)}), expected a 3D label map", path=path)
    if not np.issubdtype(data.dtype, np.integer):
        data = np.asarray(data, dtype=np.float64)
        if not np.isfinite(data).all():
            raise DataError("label map contains NaN/Inf voxels", path=path)
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise DataError("label map has non-integer values", path=path)
        data = rounded
    if data.min() < 0 or data.max() > 255:
        raise DataError(f"unexpected label values (range {data.min():g}..{data.max():g}, expected 0..255)",
                        path=path)
    labels = np.asarray(data, dtype=np.int32)
    affine = np.asarray(img.affine, dtype=np.float64)
    if reference is not None:
        if tuple(labels.shape) != tuple(reference.original_shape):
            raise DataError(f"label shape {tuple(labels.shape)} does not match image shape "
                            f"{tuple(reference.original_shape)}", path=path)
        if not np.allclose(affine, reference.original_affine, atol=1e-3, rtol=1e-4):
            raise DataError("label affine does not match the image affine", path=path)
    ras = np.ascontiguousarray(_to_ras(labels, affine)[0])
    return ras


def save_label_map(labels_ras, reference, path, dtype=np.uint8):
    """Write a RAS-ordered label map as NIfTI in the original geometry of ``reference``.

    The array is reoriented back to the reference file's voxel order, so the output has exactly
    the input file's shape and affine and overlays it in any viewer. Written atomically.
    """
    labels_ras = np.asarray(labels_ras)
    if labels_ras.ndim == 4 and labels_ras.shape[-1] == 1:
        labels_ras = labels_ras[..., 0]
    expected = tuple(reference.array.shape[:3])
    if labels_ras.shape != expected:
        raise DataError(f"label map shape {labels_ras.shape} does not match the reference volume {expected}",
                        path=path)
    data = _from_ras(labels_ras, reference.original_affine).astype(dtype)
    return _write_nifti(data, reference.original_affine, path)


def save_volume(array, affine, path, dtype=None):
    """Write a ``(X, Y, Z)`` or ``(X, Y, Z, C)`` array as NIfTI with ``affine`` (no reorientation)."""
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype)
    return _write_nifti(array, affine, path)


def _write_nifti(array, affine, path):
    """Write ``array`` with ``affine`` (qform and sform, mm units) atomically."""
    nib = _nib()
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = Path(path)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path) as tmp:
        # nibabel picks compression from the name: keep the real suffix on the temp file.
        tmp_named = Path(str(tmp) + suffix) if not str(tmp).endswith(suffix) else Path(tmp)
        nib.save(img, str(tmp_named))
        if tmp_named != Path(tmp):
            tmp_named.replace(tmp)
    return path
