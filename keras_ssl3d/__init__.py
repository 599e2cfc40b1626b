"""keras-ssl3d: self-supervised 3D (and 2D) encoders for medical imaging, as a Keras 3 plugin.

Importing the package registers every serializable layer, loss, metric and model, so ``.keras``
files and preset folders made with it load with ``safe_mode=True``. The one exception is the
``keras-ssl3d`` executable: it imports the package without Keras (so ``--help``, ``--version`` and
``zoo list`` never start TensorFlow) and calls ``import_all()`` before a command that needs it;
any attribute access does the same.
"""

import os as _os
import sys as _sys

# TensorFlow's C++ start-up lines (oneDNN notices, "failed call to cuInit ... CUDA error" on machines without
# a GPU) are noise for a user of the Python API, as they are for the CLI: quiet them unless the user chose a
# level. Only effective before TensorFlow is imported, hence first thing here.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2 machines they make 3D convolutions ~2.4x faster (64^3 step 14.6 s -> 6.1 s here). This only
# takes effect when TensorFlow is not imported yet, and a value the user set wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# KERAS_SSL3D_CPU_DEVICES=N (tests, CI) must reach XLA before JAX is imported (no Keras import here).
from keras_ssl3d.distribute import apply_cpu_devices_env as _apply_cpu_devices_env  # noqa: E402

_apply_cpu_devices_env()

from keras_ssl3d.errors import ConfigError, DataError, PresetError, RunError, SSL3DError  # noqa: E402
from keras_ssl3d.version import __version__  # noqa: E402

_KERAS_NAMES = {
    "data": "keras_ssl3d.data", "losses": "keras_ssl3d.losses", "tasks": "keras_ssl3d.tasks",
    "MeanDice": "keras_ssl3d.finetune.metrics", "QuadraticKappa": "keras_ssl3d.finetune.metrics",
    "ResidualBlock": "keras_ssl3d.layers", "UNetDecoder3D": "keras_ssl3d.layers", "set_remat": "keras_ssl3d.layers",
    "set_micro_batches": "keras_ssl3d.layers",
    "DiceCELoss": "keras_ssl3d.losses", "InfoNCE": "keras_ssl3d.losses", "SoftDiceLoss": "keras_ssl3d.losses",
    "TripletLoss": "keras_ssl3d.losses",
    "Classifier2D": "keras_ssl3d.models", "Encoder2D": "keras_ssl3d.models", "Encoder3D": "keras_ssl3d.models",
    "Segmenter3D": "keras_ssl3d.models",
    "CPC": "keras_ssl3d.tasks", "RPL": "keras_ssl3d.tasks", "Exemplar": "keras_ssl3d.tasks",
    "Jigsaw": "keras_ssl3d.tasks", "Rotation": "keras_ssl3d.tasks", "Genesis": "keras_ssl3d.tasks",
    "MAE": "keras_ssl3d.tasks", "SimCLR": "keras_ssl3d.tasks",
    "EncoderScaledAdam": "keras_ssl3d.finetune.optimizer", "EncoderScaledSGD": "keras_ssl3d.finetune.optimizer",
}


def import_all():
    """Import (and so register) every layer, loss, metric, model and task; binds the public names."""
    import importlib

    for name, module in _KERAS_NAMES.items():
        mod = importlib.import_module(module)
        globals()[name] = mod if module.endswith("." + name) else getattr(mod, name)


def __getattr__(name):
    if name in _KERAS_NAMES:
        import_all()
        return globals()[name]
    raise AttributeError(f"module 'keras_ssl3d' has no attribute {name!r}")


def _launched_as_cli():
    """True inside the ``keras-ssl3d`` console script (its ``__main__`` is that script)."""
    main_file = getattr(_sys.modules.get("__main__"), "__file__", None) or ""
    return _os.path.basename(main_file).removesuffix(".exe").removesuffix("-script.py") == "keras-ssl3d"


if not _launched_as_cli():
    from keras_ssl3d.native_logs import native_logs_filtered as _native_logs_filtered
    from keras_ssl3d.native_logs import native_logs_wanted as _native_logs_wanted

    # TF_CPP_MIN_LOG_LEVEL=0 asks for every line (as `keras-ssl3d --verbose` does); processes this one starts
    # (a study's parallel runs) inherit the level set above and stay quiet as well
    if "keras" in _sys.modules or _native_logs_wanted():
        import_all()
    else:  # lines TensorFlow prints before its log level applies (port.cc, cudart_stub.cc) are dropped too
        with _native_logs_filtered():
            import_all()

__all__ = sorted([*_KERAS_NAMES, "ConfigError", "DataError", "PresetError", "RunError", "SSL3DError",
                  "__version__", "import_all"])
