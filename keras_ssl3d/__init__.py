"""keras-ssl3d: self-supervised 3D (and 2D) encoders for medical imaging, as a Keras 3 plugin."""

from keras_ssl3d.errors import ConfigError, DataError, PresetError, RunError, SSL3DError
from keras_ssl3d.layers import ResidualBlock, UNetDecoder3D
from keras_ssl3d.models import Classifier2D, Encoder2D, Encoder3D, Segmenter3D
from keras_ssl3d.version import __version__

__all__ = [
    "Classifier2D",
    "ConfigError",
    "DataError",
    "Encoder2D",
    "Encoder3D",
    "PresetError",
    "ResidualBlock",
    "RunError",
    "SSL3DError",
    "Segmenter3D",
    "UNetDecoder3D",
    "__version__",
]
