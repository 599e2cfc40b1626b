"""keras-ssl3d: self-supervised 3D (and 2D) encoders for medical imaging, as a Keras 3 plugin.

Importing the package registers every serializable layer, loss, metric and model, so ``.keras``
files and preset folders made with it load with ``safe_mode=True``.
"""

import os as _os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2 machines they make 3D convolutions ~2.4x faster (64^3 step 14.6 s -> 6.1 s here). This only
# takes effect when TensorFlow is not imported yet, and a value the user set wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_ssl3d import data, losses, tasks
from keras_ssl3d.errors import ConfigError, DataError, PresetError, RunError, SSL3DError
from keras_ssl3d.finetune.metrics import MeanDice, QuadraticKappa
from keras_ssl3d.layers import ResidualBlock, UNetDecoder3D, set_remat
from keras_ssl3d.losses import DiceCELoss, InfoNCE, SoftDiceLoss, TripletLoss
from keras_ssl3d.models import Classifier2D, Encoder2D, Encoder3D, Segmenter3D
from keras_ssl3d.tasks import CPC, RPL, Exemplar, Jigsaw, Rotation
from keras_ssl3d.version import __version__

__all__ = [
    "CPC",
    "RPL",
    "Classifier2D",
    "ConfigError",
    "DataError",
    "DiceCELoss",
    "Encoder2D",
    "Encoder3D",
    "Exemplar",
    "InfoNCE",
    "Jigsaw",
    "MeanDice",
    "PresetError",
    "QuadraticKappa",
    "ResidualBlock",
    "Rotation",
    "RunError",
    "SSL3DError",
    "Segmenter3D",
    "SoftDiceLoss",
    "TripletLoss",
    "UNetDecoder3D",
    "__version__",
    "data",
    "losses",
    "set_remat",
    "tasks",
]
