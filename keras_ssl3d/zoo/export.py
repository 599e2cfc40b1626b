"""Export an encoder as a TF-Hub style reusable SavedModel (TensorFlow backend only).

The SavedModel follows the TF Hub "reusable SavedModel" convention:

- ``obj(inputs, training=False)``: the encoder, traced for ``training`` True and False;
- ``obj.variables``, ``obj.trainable_variables``: the weights; ``obj.regularization_losses``: an
  empty list (the encoders have no weight regularisers);
- ``obj.serve(inputs)``: inference endpoint (also the ``serve`` and ``serving_default``
  signatures), for ``keras.layers.TFSMLayer(path, call_endpoint="serve")`` and TF Serving.

Spatial dimensions are dynamic (``None``) unless the encoder was built with a fixed
``spatial_shape``; the channel count is fixed.

Ways to use it (Keras 3):

- ``m = tensorflow_hub.load(path); y = m(x)`` or ``m.serve(x)`` -- keep ``m`` referenced
  (``hub.load(path).serve(x)`` in one expression fails: the variables are freed);
- ``keras.layers.TFSMLayer(path, call_endpoint="serve")`` inside a Keras 3 model (TensorFlow
  backend; loading a ``.keras`` file containing it needs ``safe_mode=False``);
- ``tf.saved_model.load(path)`` in plain TensorFlow.

``hub.KerasLayer`` is a tf-keras (Keras 2) layer and cannot be placed in a Keras 3 model.
For fine-tuning prefer the Keras preset itself (``from_pretrained``).

``tfhub-tgz`` writes the same SavedModel as a gzip-compressed tarball (TF Hub's compressed
module format: the SavedModel files at the archive root). ``extract_tfhub_tgz`` reads one back
without ever writing outside the target folder.

Both carry the marker file ``.keras-ssl3d-export`` (the archive's first member), so that an earlier
export is recognised: only such an export is ever replaced (with ``overwrite``), never a user's folder
or file.
"""

import errno
import io
import os
import tarfile
import tempfile
from pathlib import Path

import keras

from keras_ssl3d.errors import ConfigError, OutputError, PresetError
from keras_ssl3d.fileio import (
    atomic_directory,
    atomic_path,
    claim_output_dir,
    claim_output_file,
    disk_full_message,
    is_disk_full,
    marker_kind,
)

FORMATS = ("saved_model", "tfhub-tgz")
EXPORT_MARKER = ".keras-ssl3d-export"
_MARKER_TEXT = b"written by keras-ssl3d export; only such a folder or archive is replaced by a later export\n"
SAVED_MODEL_OUTPUT = marker_kind("SavedModel export",
                                 ("saved_model.pb", "variables", "assets", "fingerprint.pb"), EXPORT_MARKER)


def _require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs "
            f"{keras.backend.backend()!r}"
        )
    import tensorflow as tf

    return tf


def _input_spec(model, tf):
    shape = tuple(model.inputs[0].shape)
    return tf.TensorSpec(shape=(None,) + tuple(shape[1:]), dtype=tf.float32, name="inputs")


def build_hub_module(model):
    """The trackable object that becomes the SavedModel (see the module docstring)."""
    tf = _require_tensorflow()
    spec = _input_spec(model, tf)
    root = tf.__internal__.tracking.AutoTrackable()
    # Keras 3 variables are trackable TF variables under the TensorFlow backend.
    root.variables = list(model.variables)
    root.trainable_variables = list(model.trainable_variables)
    root.regularization_losses = []

    @tf.function(autograph=False)
    def call(inputs, training=False):
        return model(inputs, training=training)

    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    root.__call__ = call
    root.serve = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec],
                             autograph=False)
    return root


def claim_export(out, format="saved_model", overwrite=False, option=None):
    """Refuse (`OutputError`) unless ``out`` is new/empty or an earlier export (and ``overwrite``)."""
    if format == "saved_model":
        return claim_output_dir(out, SAVED_MODEL_OUTPUT, overwrite=overwrite, replace=True, option=option)
    if format == "onnx":
        from keras_ssl3d.zoo.onnx import claim_onnx

        return claim_onnx(out, overwrite=overwrite, option=option)
    return claim_output_file(out, is_tfhub_archive, "TF Hub archive", overwrite=overwrite, option=option)


def is_tfhub_archive(path):
    """Whether ``path`` is a ``.tar.gz`` written by `export_saved_model` (its first member is the marker)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
    except (OSError, tarfile.TarError, EOFError):
        return False
    return first is not None and first.name == EXPORT_MARKER


def export_saved_model(model, out, format="saved_model", overwrite=False, option=None):
    """Write ``model`` to ``out`` as a reusable SavedModel folder or a ``.tar.gz`` module; return the path.

    ``out`` must be new (or an empty folder); an earlier export there is replaced only with ``overwrite``,
    and anything else is refused (`OutputError`). On a full disk: `OutputError` naming ``out``, nothing
    half-written left, an earlier export intact.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {FORMATS}")
    tf = _require_tensorflow()
    if not model.built or not model.inputs:
        raise ConfigError("export needs a built functional model (an encoder from from_pretrained or its class)")
    out = Path(out)
    claim_export(out, format, overwrite=overwrite, option=option)
    root = build_hub_module(model)
    signatures = {"serving_default": root.serve, "serve": root.serve}
    try:
        if format == "saved_model":
            with atomic_directory(out, SAVED_MODEL_OUTPUT, overwrite=overwrite, option=option) as tmp:
                tf.saved_model.save(root, str(tmp), signatures=signatures)
                (tmp / EXPORT_MARKER).write_bytes(_MARKER_TEXT)
            return out
        with tempfile.TemporaryDirectory(prefix="keras_ssl3d_export_") as tmp:
            tf.saved_model.save(root, tmp, signatures=signatures)
            with atomic_path(out) as tmp_archive:
                write_tgz(tmp, tmp_archive, marker=True)
                claim_export(out, format, overwrite=overwrite, option=option)  # still ours just before the swap
    except OSError as e:
        raise _write_error(e, out) from None
    except Exception as e:  # TensorFlow wraps a failed write (full disk) in its own errors
        full = _tf_disk_full(e)
        if full is not None:
            raise OutputError(disk_full_message(out, full)) from None
        raise
    return out


def _write_error(e, out):
    if is_disk_full(e):
        return OutputError(disk_full_message(out, e))
    return OutputError(f"cannot write the export ({e.strerror or e})", path=e.filename or out)


def _tf_disk_full(e):
    """The OSError behind a TensorFlow error that reports a full disk or file-size limit, else None."""
    if not type(e).__module__.startswith("tensorflow"):
        return None
    for number, text in ((errno.ENOSPC, "No space left on device"), (errno.EFBIG, "File too large"),
                         (errno.EDQUOT, "Disk quota exceeded")):
        if text in str(e):
            return OSError(number, text)
    return None


def write_tgz(folder, archive, marker=False):
    """Tar+gzip the files of ``folder`` at the archive root: regular files and folders only.

    ``marker``: the export marker is the archive's first member (see `is_tfhub_archive`).
    """
    folder = Path(folder)
    with tarfile.open(archive, "w:gz") as tar:
        if marker:
            info = tarfile.TarInfo(EXPORT_MARKER)
            info.size, info.mode = len(_MARKER_TEXT), 0o644
            tar.addfile(info, io.BytesIO(_MARKER_TEXT))
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise PresetError("refusing to archive a symbolic link", path=path)
            arcname = path.relative_to(folder).as_posix()
            info = tar.gettarinfo(str(path), arcname=arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return archive


def extract_tfhub_tgz(archive, dest):
    """Safely extract a compressed TF Hub module into ``dest`` (atomically); return ``dest``.

    Only regular files and folders are accepted; absolute names, ``..`` and links are refused.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise PresetError(f"not a readable tar archive ({e})", path=archive) from None
    with tar, atomic_directory(dest, SAVED_MODEL_OUTPUT) as tmp:
        root = Path(tmp).resolve()
        for member in tar.getmembers():
            name = member.name
            target = (root / name).resolve()
            if (os.path.isabs(name) or ".." in Path(name).parts or (target != root and root not in target.parents)):
                raise PresetError(f"archive member {name!r} would be written outside the target folder", path=archive)
            if not (member.isfile() or member.isdir()):
                raise PresetError(f"archive member {name!r} is not a regular file or folder", path=archive)
        tar.extractall(root, filter="data")
    return dest
