"""Encoders and downstream models."""

from keras_ssl3d.models.classifier2d import Classifier2D
from keras_ssl3d.models.encoder2d import Encoder2D
from keras_ssl3d.models.encoder3d import Encoder3D
from keras_ssl3d.models.segmenter3d import Segmenter3D

# The classes a preset folder can hold (see presets/io.py and integrations/keras_hub.py).
PRESET_CLASSES = (Classifier2D, Encoder2D, Encoder3D, Segmenter3D)

__all__ = ["PRESET_CLASSES", "Classifier2D", "Encoder2D", "Encoder3D", "Segmenter3D"]
