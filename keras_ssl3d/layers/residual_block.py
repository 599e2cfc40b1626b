"""Residual convolution block (3D and 2D), the unit of the paper's U-Net encoder."""

import keras

from keras_ssl3d.layers.normalization import check_norm, make_norm

_CONV = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class ResidualBlock(keras.layers.Layer):
    """Two 3x3(x3) convolutions with normalization and ReLU, plus a shortcut.

    ``y = relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``; the shortcut is a 1x1(x1)
    projection (with normalization) when the width or stride changes, else the identity.

    Args:
        filters: output channels.
        rank: 3 for volumes ``(N, D, H, W, C)``, 2 for images ``(N, H, W, C)``.
        strides: stride of the first convolution (a strided-conv down-sampling option).
        norm: ``"batch"`` (default), ``"group"``, ``"instance"`` or ``"none"``.
        projection: always use the 1x1(x1) projection shortcut, even when the shape is kept.
            The encoder's first block uses it so that its structure never depends on the
            number of input channels (which input-channel adaptation changes).
    """

    def __init__(self, filters, rank=3, strides=1, norm="batch", projection=False, kernel_initializer="he_normal",
                 **kwargs):
        super().__init__(**kwargs)
        if rank not in _CONV:
            raise ValueError(f"rank must be 2 or 3, got {rank!r}")
        self.filters = int(filters)
        self.rank = int(rank)
        self.strides = int(strides)
        self.norm = check_norm(norm)
        self.projection = bool(projection)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        conv = _CONV[self.rank]
        use_bias = self.norm == "none"
        init = self.kernel_initializer
        self.conv1 = conv(self.filters, 3, strides=self.strides, padding="same", use_bias=use_bias,
                          kernel_initializer=init, name="conv1")
        self.norm1 = make_norm(self.norm, self.filters, "norm1")
        self.conv2 = conv(self.filters, 3, padding="same", use_bias=use_bias, kernel_initializer=init, name="conv2")
        self.norm2 = make_norm(self.norm, self.filters, "norm2")
        self.shortcut_conv = None
        self.shortcut_norm = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("ResidualBlock needs a known number of input channels")
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        if self.norm1 is not None:
            self.norm1.build(mid_shape)
        self.conv2.build(mid_shape)
        if self.norm2 is not None:
            self.norm2.build(mid_shape)
        if self.projection or in_channels != self.filters or self.strides != 1:
            self.shortcut_conv = _CONV[self.rank](
                self.filters, 1, strides=self.strides, padding="same", use_bias=self.norm == "none",
                kernel_initializer=self.kernel_initializer, name="shortcut_conv")
            self.shortcut_conv.build(input_shape)
            self.shortcut_norm = make_norm(self.norm, self.filters, "shortcut_norm")
            if self.shortcut_norm is not None:
                self.shortcut_norm.build(mid_shape)

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        if self.norm1 is not None:
            x = self.norm1(x, training=training)
        x = keras.ops.relu(x)
        x = self.conv2(x)
        if self.norm2 is not None:
            x = self.norm2(x, training=training)
        shortcut = inputs
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(inputs)
            if self.shortcut_norm is not None:
                shortcut = self.shortcut_norm(shortcut, training=training)
        return keras.ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            rank=self.rank,
            strides=self.strides,
            norm=self.norm,
            projection=self.projection,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
