"""The U-Net decoder (up-sampling path) added for 3D segmentation fine-tuning."""

import keras

from keras_ssl3d.layers.normalization import check_norm
from keras_ssl3d.layers.residual_block import ResidualBlock

UPSAMPLING = ("transpose", "trilinear")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class UNetDecoder3D(keras.layers.Layer):
    """Decodes encoder features back to full resolution with skip connections.

    Called on the list of encoder level features ``[level1, ..., levelN]`` (finest first, as
    ``Encoder3D.feature_extractor()`` returns them). Starting from the bottleneck ``levelN``,
    each up-sampling level doubles the spatial size (a stride-2 transposed convolution, or
    trilinear up-sampling + 1x1x1 conv), concatenates the encoder feature of the same size and
    applies a residual block. The result has the size of ``level1``, i.e. of the input volume.

    Args:
        filters: widths of the up-sampling levels, coarsest first; by default the encoder's
            widths mirrored (``(256, 128, 64, 32)`` for the paper's encoder). Empty for a one-level
            encoder: the decoder then returns the full-resolution features unchanged.
        norm: normalization of the residual blocks.
        upsample: ``"transpose"`` (default) or ``"trilinear"``.
        remat: rematerialise the residual blocks (see ``ResidualBlock``).
    """

    def __init__(self, filters=(256, 128, 64, 32), norm="batch", upsample="transpose", remat=False, **kwargs):
        super().__init__(**kwargs)
        self.remat = bool(remat)
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        self.filters = tuple(int(f) for f in filters)
        self.norm = check_norm(norm)
        self.upsample = upsample
        self.up_layers = []
        self.blocks = []
        for i, width in enumerate(self.filters, start=1):
            if upsample == "transpose":
                up = keras.layers.Conv3DTranspose(width, 2, strides=2, padding="same", name=f"up{i}_transpose")
            else:
                up = keras.Sequential(
                    [keras.layers.UpSampling3D(2), keras.layers.Conv3D(width, 1, name=f"up{i}_conv")],
                    name=f"up{i}_trilinear",
                )
            self.up_layers.append(up)
            self.blocks.append(ResidualBlock(width, rank=3, norm=norm, remat=self.remat, name=f"up{i}_block"))
        self.concat = keras.layers.Concatenate(axis=-1)

    def _check(self, features):
        if not isinstance(features, (list, tuple)) or len(features) != len(self.filters) + 1:
            raise ValueError(
                f"UNetDecoder3D with {len(self.filters)} up-sampling levels needs "
                f"{len(self.filters) + 1} encoder features, got "
                f"{len(features) if isinstance(features, (list, tuple)) else type(features).__name__}"
            )

    def build(self, input_shape):
        self._check(input_shape)
        shape = input_shape[-1]
        for i, (up, block) in enumerate(zip(self.up_layers, self.blocks)):
            up.build(shape)
            up_shape = up.compute_output_shape(shape)
            skip_shape = input_shape[-2 - i]
            cat_shape = (*skip_shape[:-1], up_shape[-1] + skip_shape[-1])
            block.build(cat_shape)
            shape = block.compute_output_shape(cat_shape)

    def call(self, features, training=None):
        self._check(features)
        x = features[-1]
        for i, (up, block) in enumerate(zip(self.up_layers, self.blocks)):
            x = up(x)
            x = self.concat([x, features[-2 - i]])
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        # No up-sampling level (a one-level encoder): the decoder passes the level-1 features through.
        return (*input_shape[0][:-1], self.filters[-1] if self.filters else input_shape[0][-1])

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), norm=self.norm, upsample=self.upsample, remat=self.remat)
        return config
