"""Export a model to ONNX with Keras' own exporter, checked with onnxruntime.

``model.export(path, format="onnx")`` works on the TensorFlow backend: Keras converts through tf2onnx,
and the batch and spatial sizes stay dynamic. Measured with Keras 3.15.1: on torch 2.13 its exporter
fails on the 3D convolutions ("onnx memory_format support is not implemented"), and on JAX it needs
jax2onnx; both are refused with one line.
"""

from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.fileio import atomic_path, claim_output_file

# Written into the ONNX model's metadata: how `export` recognises its own file (only those are replaced).
WRITTEN_BY = ("written_by", "keras-ssl3d export")


def _check_can_export():
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ConfigError(f"ONNX export needs KERAS_BACKEND=tensorflow (this process uses {backend!r}; Keras' "
                          "ONNX exporter fails on torch for 3D convolutions and needs jax2onnx on jax)")
    try:
        import tf2onnx  # noqa: F401  (Keras imports it itself; checked here for a clear message)
    except ImportError:
        raise ConfigError("ONNX export needs tf2onnx: pip install 'keras-ssl3d[onnx]'") from None


def example_input(model, seed=0):
    """A random batch of one that the model accepts (free sizes set to the smallest the model takes)."""
    side = getattr(getattr(model, "encoder", model), "size_divisor", 16)
    shape = [1] + [side if d is None else int(d) for d in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def claim_onnx(out, overwrite=False, option=None):
    """Refuse (`OutputError`) unless ``out`` is new, or an earlier ONNX export of ours and ``overwrite``."""
    return claim_output_file(out, is_own_onnx, "ONNX model", overwrite=overwrite, option=option)


def is_own_onnx(path):
    """Whether ``path`` is an ONNX file written by `export_onnx` (its metadata says so)."""
    try:
        import onnx

        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:  # not ONNX, or onnx missing: not ours
        return False
    return any((p.key, p.value) == WRITTEN_BY for p in props)


def export_onnx(model, out, overwrite=False, option=None):
    """Write ``model`` to the ONNX file ``out`` (atomically); return the path.

    ``out`` must be new; an earlier ONNX export of ours is replaced only with ``overwrite``, anything else
    is refused (`OutputError`).
    """
    _check_can_export()
    out = Path(out)
    claim_onnx(out, overwrite=overwrite, option=option)
    if not model.built or not model.inputs:
        raise ConfigError("ONNX export needs a built functional model (e.g. from from_pretrained)")
    model(example_input(model), training=False)  # Keras exports only a model that has been called
    import onnx

    with atomic_path(out) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
        exported = onnx.load(str(tmp))
        mark = exported.metadata_props.add()
        mark.key, mark.value = WRITTEN_BY
        onnx.save(exported, str(tmp))
    return out


def onnx_max_abs_diff(model, path, x=None):
    """Largest |Keras - onnxruntime| over the outputs for ``x`` (default: ``example_input(model)``)."""
    import keras
    import onnxruntime

    x = example_input(model) if x is None else np.asarray(x, dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.abs(got - expected).max())
