"""Atomic file and folder writes, and the one guard every writer passes through before it writes.

A crash or a full disk never leaves a half-written output, and no writer ever replaces, deletes or
overwrites a file the package did not write: an output folder must be new, empty, or recognisably this
package's own output of the same kind (`claim_output_dir`), and an output file must be new or the
package's own (`claim_output_file`).
"""

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from keras_ssl3d.errors import OutputError


def is_disk_full(err):
    """Whether ``err`` (an OSError) means the disk, a quota or a file-size limit is full."""
    return isinstance(err, OSError) and disk_full_reason(err) is not None


def disk_full_message(path, err):
    """One line for a write that ran out of space: which path, and that the disk (or a limit) is full."""
    fix = "raise the limit" if getattr(err, "errno", None) == errno.EFBIG else "free some space"
    return f"{path}: cannot write, {disk_full_reason(err)}; {fix} and run the command again"


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """One kind of output folder the package writes.

    ``label``: how a message names it ("preset folder"); ``files``: the names the package writes at the
    folder's top level (only these are ever replaced); ``is_own(folder)``: whether an existing folder was
    written by the package as this kind (a marker file or the kind's own record).
    """

    label: str
    files: frozenset
    is_own: Callable


def marker_kind(label, files, marker):
    """An `OutputKind` recognised by its ``marker`` file (one of ``files``)."""
    return OutputKind(label, frozenset(files) | {marker}, lambda folder: (Path(folder) / marker).is_file())


def claim_output_dir(path, kind, *, overwrite=True, replace=False, option=None):
    """Refuse (`OutputError`, one line naming the folder) unless ``path`` may receive ``kind``'s output.

    Allowed: a folder that does not exist or is empty, or one that ``kind.is_own`` recognises. With
    ``replace`` (the writer swaps the whole folder) an own folder must hold nothing but ``kind.files``
    (a file the user added there is never deleted), and ``overwrite`` must be true to replace it.
    Returns True when ``path`` holds earlier output of this kind. Creates nothing.
    """
    path = Path(path)
    flag = f"pass {option}" if option else "pass overwrite=True"
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_dir():
        raise OutputError(f"exists and is not a folder; choose a new or empty folder for the {kind.label}", path=path)
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return False
    if not kind.is_own(path):
        raise OutputError(f"the folder is not empty and holds no {kind.label} written by keras-ssl3d; "
                          "choose a new or empty folder (nothing was written)", path=path)
    if replace:
        foreign = [name for name in entries if name not in kind.files]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputError(f"holds an earlier {kind.label} and also {foreign[0]!r}{more}, which keras-ssl3d did "
                              "not write; move that elsewhere or choose a new folder (nothing was written)", path=path)
        if not overwrite:
            raise OutputError(f"holds an earlier {kind.label}; {flag} to replace it, or choose a new folder",
                              path=path)
    return True


def claim_output_file(path, is_own, what, *, overwrite=True, option=None):
    """Refuse (`OutputError`) unless ``path`` is new, or a file ``is_own(path)`` recognises and ``overwrite``."""
    path = Path(path)
    flag = f"pass {option}" if option else "pass overwrite=True"
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_file() or path.is_symlink() or not is_own(path):
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise OutputError(f"exists and was not written by keras-ssl3d as {article} {what}; choose a new file name "
                          "(nothing was written)", path=path)
    if not overwrite:
        raise OutputError(f"holds an earlier {what}; {flag} to replace it, or choose a new file name", path=path)
    return True


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
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.filename is None or str(e.filename) == str(tmp):  # name the file the user asked for, not ours
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
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
def atomic_directory(path, kind, overwrite=True, option=None):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    ``path`` must be new, empty, or ``kind``'s own output holding only ``kind.files`` (see
    `claim_output_dir`; checked before and again just before the swap), so only the package's own
    files are ever replaced.
    """
    path = Path(path)
    claim_output_dir(path, kind, overwrite=overwrite, replace=True, option=option)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        claim_output_dir(path, kind, overwrite=overwrite, replace=True, option=option)
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


def disk_full_reason(error):
    """The words for a write that failed for lack of room, or ``None`` for another error.

    ENOSPC/EDQUOT (disk or quota full), EFBIG (a file-size limit such as ``ulimit -f``), and numpy's short
    write ("131072 requested and 118752 written", no errno) all mean the same to a user.
    """
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC:
        return "the disk is full (No space left on device)"
    if code == errno.EDQUOT:
        return "the disk quota is exceeded (Disk quota exceeded)"
    if code == errno.EFBIG:
        return "the disk is full for a file this size (File too large: a file-size limit such as ulimit -f)"
    short = re.search(r"(\d+) requested and (\d+) written", str(error))
    if short:
        return f"the disk is full (only {short.group(2)} of {short.group(1)} bytes could be written)"
    return None
