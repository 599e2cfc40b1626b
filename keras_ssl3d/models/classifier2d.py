"""2D classification model (e.g. retinopathy grading): an Encoder2D + pooling + softmax."""

import keras

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.presets.mixin import PretrainedMixin


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Classifier2D(PretrainedMixin, keras.Model):
    """Image classifier on top of ``encoder`` (shared, not copied).

    Global average pooling of the encoder's feature map, optional dropout, a softmax layer.
    """

    def __init__(self, encoder, num_classes, dropout=0.0, activation="softmax", name="classifier2d", **kwargs):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if getattr(encoder, "rank", None) != 2:
            raise ConfigError(f"Classifier2D needs a 2D encoder, got {type(encoder).__name__}")
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
        x = encoder(inputs)
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="head")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.encoder = encoder
        self.num_classes = num_classes
        self.dropout = float(dropout)
        self.activation = activation

    @property
    def rank(self):
        return 2

    @property
    def in_channels(self):
        return self.encoder.in_channels

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
