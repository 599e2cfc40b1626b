"""The paper's 2D encoder: DenseNet-121 (configurable depth so tests can use a tiny one)."""

import keras

from keras_ssl3d.presets.mixin import PretrainedMixin

POOLINGS = (None, "avg", "max")


def _dense_block(x, num_layers, growth_rate, name):
    for i in range(1, num_layers + 1):
        y = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_layer{i}_bn1")(x)
        y = keras.layers.Activation("relu", name=f"{name}_layer{i}_relu1")(y)
        y = keras.layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_layer{i}_conv1")(y)
        y = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_layer{i}_bn2")(y)
        y = keras.layers.Activation("relu", name=f"{name}_layer{i}_relu2")(y)
        y = keras.layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_layer{i}_conv2")(y)
        x = keras.layers.Concatenate(axis=-1, name=f"{name}_layer{i}_concat")([x, y])
    return x


def _transition(x, channels, name):
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Encoder2D(PretrainedMixin, keras.Model):
    """DenseNet encoder for images ``(N, H, W, C)``; DenseNet-121 by default.

    The default ``blocks=(6, 12, 24, 16)``, ``growth_rate=32`` is DenseNet-121 (Huang et al.),
    the paper's 2D encoder, built with ``keras`` layers only (no ImageNet weights). Any number of
    input channels and any image size >= 32 work.

    Args:
        in_channels: input channels (3 for RGB fundus photographs).
        blocks: layers per dense block.
        growth_rate: channels added by each dense layer.
        stem_filters: channels of the 7x7 stem convolution.
        pooling: ``None`` (feature map), ``"avg"`` or ``"max"`` (global pooling to a vector).
        channel_names: optional names of the input channels.
    """

    def __init__(self, in_channels=3, blocks=(6, 12, 24, 16), growth_rate=32, stem_filters=64,
                 compression=0.5, pooling=None, channel_names=None, spatial_shape=None,
                 name="encoder2d", **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        blocks = tuple(int(b) for b in blocks)
        if channel_names is not None:
            channel_names = [str(c) for c in channel_names]
            if len(channel_names) != in_channels:
                raise ValueError(f"{len(channel_names)} channel_names given for in_channels={in_channels}")
        spatial = tuple(spatial_shape) if spatial_shape is not None else (None, None)

        inputs = keras.Input(shape=(*spatial, int(in_channels)), name="image")
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(inputs)
        x = keras.layers.Conv2D(stem_filters, 7, strides=2, use_bias=False, name="stem_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
        pyramid = {"stem": x}
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        channels = stem_filters
        for i, num_layers in enumerate(blocks, start=1):
            x = _dense_block(x, num_layers, growth_rate, name=f"dense{i}")
            channels += num_layers * growth_rate
            pyramid[f"dense{i}"] = x
            if i < len(blocks):
                channels = int(channels * compression)
                x = _transition(x, channels, name=f"transition{i}")
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name="final_bn")(x)
        x = keras.layers.Activation("relu", name="final_relu")(x)
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        self.pyramid_outputs = pyramid
        self.in_channels = int(in_channels)
        self.blocks = blocks
        self.growth_rate = int(growth_rate)
        self.stem_filters = int(stem_filters)
        self.compression = float(compression)
        self.pooling = pooling
        self.channel_names = channel_names
        self.spatial_shape = None if spatial_shape is None else tuple(spatial_shape)
        self.output_channels = channels

    @property
    def rank(self):
        return 2

    @property
    def min_input_size(self):
        """Smallest side that survives the padded stem conv and pool (each ceil(s/2)) and the
        transitions' 2x pooling (each floor(s/2))."""
        return 4 * 2 ** (len(self.blocks) - 1) - 3

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "in_channels": self.in_channels,
            "blocks": list(self.blocks),
            "growth_rate": self.growth_rate,
            "stem_filters": self.stem_filters,
            "compression": self.compression,
            "pooling": self.pooling,
            "channel_names": self.channel_names,
            "spatial_shape": None if self.spatial_shape is None else list(self.spatial_shape),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
