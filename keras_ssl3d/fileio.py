"""Atomic file and folder writes: a crash or a full disk never leaves a half-written output."""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success move it over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # Some writers (h5py, keras) refuse existing files or need the suffix: give them a fresh name.
    os.unlink(tmp)
    tmp = Path(tmp + path.suffix) if path.suffix and not tmp.endswith(path.suffix) else Path(tmp)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_file(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def disk_full_message(error):
    """The words for a write that failed for lack of room, or ``None`` for another ``OSError``.

    ENOSPC/EDQUOT (disk or quota full), EFBIG (a file-size limit), and numpy's short write
    ("131072 requested and 118752 written", no errno) all mean the same to a user.
    """
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "disk full (no space left on the device)"
    if code == errno.EFBIG:
        return "disk full (file too large: the file-size limit or the file system's limit was reached)"
    short = re.search(r"(\d+) requested and (\d+) written", str(error))
    if short:
        return f"disk full (only {short.group(2)} of {short.group(1)} bytes could be written)"
    return None
