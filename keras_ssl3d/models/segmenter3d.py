"""3D segmentation model: a (pretrained) Encoder3D + U-Net decoder + per-voxel softmax."""

import keras

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.layers.unet_decoder import UNetDecoder3D
from keras_ssl3d.presets.mixin import PretrainedMixin, load_pretrained

ACTIVATIONS = ("softmax", "sigmoid", None)


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Segmenter3D(PretrainedMixin, keras.Model):
    """U-Net for ``(N, D, H, W, C)`` volumes whose down path is ``encoder``.

    The output has the input's spatial size and ``num_classes`` channels (class probabilities
    with ``activation="softmax"``; independent ones with ``"sigmoid"``; logits with ``None``).
    Spatial sizes must be divisible by ``encoder.size_divisor`` (16 for five levels).
    The encoder is shared, not copied: ``segmenter.encoder`` is the same object, so freezing it
    (warm-up) and saving it back as a preset work directly.
    ``remat`` rematerialises the decoder's residual blocks (``None``: as the encoder does; see
    ``Encoder3D``); ``set_remat(segmenter, flag)`` switches encoder and decoder together.
    """

    def __init__(self, encoder, num_classes, activation="softmax", decoder_filters=None, norm=None,
                 upsample="transpose", remat=None, name="segmenter3d", **kwargs):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if getattr(encoder, "rank", None) != 3:
            raise ConfigError(f"Segmenter3D needs a 3D encoder, got {type(encoder).__name__}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if decoder_filters is None:
            decoder_filters = tuple(reversed(encoder.filters[:-1]))
        norm = norm or encoder.norm
        remat = bool(getattr(encoder, "remat", False) if remat is None else remat)

        inputs = keras.Input(shape=encoder.input_shape[1:], name="volume")
        features = encoder.feature_extractor()(inputs)
        decoder = UNetDecoder3D(decoder_filters, norm=norm, upsample=upsample, remat=remat, name="decoder")
        x = decoder(features)
        outputs = keras.layers.Conv3D(num_classes, 1, activation=activation, dtype="float32", name="head")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.encoder = encoder
        self.decoder = decoder
        self.num_classes = num_classes
        self.activation = activation
        self.decoder_filters = tuple(int(f) for f in decoder_filters)
        self.decoder_norm = norm
        self.upsample = upsample
        self.remat = remat

    @property
    def rank(self):
        return 3

    @property
    def in_channels(self):
        return self.encoder.in_channels

    @property
    def channel_names(self):
        return self.encoder.channel_names

    @classmethod
    def from_pretrained(cls, handle, *, num_classes=None, activation="softmax", **kwargs):
        """Load a U-Net preset, or build one on an encoder preset.

        Without ``num_classes`` the preset must hold a ``Segmenter3D`` and is returned as saved.
        With it, a U-Net preset (e.g. from Genesis or MAE pretraining) gives its encoder and its
        decoder's weights, under a fresh ``num_classes`` output layer (``with_head``); an encoder
        preset gives the encoder under a fresh decoder. Other keywords (``in_channels``,
        ``channels``, ``adapt``, hub options) are those of ``PretrainedMixin.from_pretrained``.
        """
        if num_classes is None:
            return load_pretrained(handle, cls=cls, **kwargs)
        model = load_pretrained(handle, **kwargs)
        if isinstance(model, cls):
            return model.with_head(num_classes, activation)
        if getattr(model, "rank", None) == 3 and hasattr(model, "feature_extractor"):
            return cls(model, num_classes=num_classes, activation=activation)
        raise ConfigError(f"{handle}: holds a {type(model).__name__}, neither a Segmenter3D nor a 3D encoder")

    def with_head(self, num_classes, activation="softmax", encoder=None):
        """A new U-Net on this one's encoder (shared; or ``encoder``, e.g. adapted to other input
        channels) with a copy of its decoder weights and a fresh ``num_classes`` output layer: how a
        pretrained decoder starts fine-tuning."""
        model = Segmenter3D(encoder or self.encoder, num_classes=num_classes, activation=activation,
                            decoder_filters=self.decoder_filters, norm=self.decoder_norm, upsample=self.upsample)
        model.decoder.set_weights(self.decoder.get_weights())
        return model

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "decoder_filters": list(self.decoder_filters),
            "norm": self.decoder_norm,
            "upsample": self.upsample,
            "remat": self.remat,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
