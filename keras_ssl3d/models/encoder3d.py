"""The paper's 3D U-Net encoder: five levels of residual blocks, 32 -> 512 filters."""

import keras

from keras_ssl3d.layers.micro_batch import check_micro_batches, micro_batched_call
from keras_ssl3d.layers.normalization import check_norm
from keras_ssl3d.layers.residual_block import ResidualBlock, scope_asks_remat
from keras_ssl3d.presets.mixin import PretrainedMixin

DOWNSAMPLING = ("maxpool", "conv")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Encoder3D(PretrainedMixin, keras.Model):
    """3D U-Net encoder (the down-sampling path) for inputs ``(N, D, H, W, C)``.

    Level ``i`` holds ``blocks_per_level`` residual blocks of ``filters[i]`` channels; levels are
    separated by a factor-2 down-sampling (max-pool, or a stride-2 first conv with
    ``downsample="conv"``). There is no pooling after the last level: with the default five
    levels a 128^3 input gives an 8^3 x 512 bottleneck, and the four poolings are exactly what the
    U-Net decoder undoes (hence sizes divisible by 16 for segmentation). Any spatial size works
    for the encoder alone (e.g. 39^3 pretext patches).

    Calling the encoder returns the bottleneck; ``encoder.pyramid_outputs`` maps
    ``"level1"..."levelN"`` to the per-level features (the decoder's skip connections), and
    ``encoder.feature_extractor()`` returns a model that outputs them as a list.

    Args:
        in_channels: number of input channels (modalities stacked as channels).
        filters: widths of the levels; the paper uses ``(32, 64, 128, 256, 512)``.
        blocks_per_level: residual blocks per level.
        downsample: ``"maxpool"`` (default) or ``"conv"`` (strided convolution).
        norm: ``"batch"`` (default), ``"group"``, ``"instance"`` or ``"none"``.
        channel_names: optional names of the input channels (e.g. ``["t1", "flair"]``), kept in
            the saved preset so inputs can be matched by name later.
        spatial_shape: optional fixed spatial size; ``None`` accepts any size.
        remat: rematerialise every residual block (gradient checkpointing; see ``ResidualBlock``):
            same loss and gradients, much less activation memory, ~1/3 more compute. Saved in
            the config; ``set_remat(model, flag)`` switches it on a built (e.g. loaded) model.
            Building under ``keras.RematScope(mode="full")`` turns it on too.
        micro_batches: in training, run the batch in this many sequential rematerialised parts
            (see ``layers.micro_batch``): the activations of one part at a time, for tasks whose
            loss couples the samples; batch norm then normalises each part on its own. Saved in
            the config; ``set_micro_batches(model, n)`` switches it on a built model.
    """

    def __init__(self, in_channels=1, filters=(32, 64, 128, 256, 512), blocks_per_level=1,
                 downsample="maxpool", norm="batch", channel_names=None, spatial_shape=None,
                 remat=False, micro_batches=1, name="encoder3d", **kwargs):
        remat = bool(remat) or scope_asks_remat()
        micro_batches = check_micro_batches(micro_batches)
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample must be one of {DOWNSAMPLING}, got {downsample!r}")
        check_norm(norm)
        filters = tuple(int(f) for f in filters)
        if not filters:
            raise ValueError("filters must name at least one level")
        if channel_names is not None:
            channel_names = [str(c) for c in channel_names]
            if len(channel_names) != in_channels:
                raise ValueError(f"{len(channel_names)} channel_names given for in_channels={in_channels}")
        spatial = tuple(spatial_shape) if spatial_shape is not None else (None, None, None)

        inputs = keras.Input(shape=(*spatial, int(in_channels)), name="volume")
        x = inputs
        pyramid = {}
        for level, width in enumerate(filters, start=1):
            first_stride = 1
            if level > 1:
                if downsample == "maxpool":
                    x = keras.layers.MaxPooling3D(2, name=f"level{level}_pool")(x)
                else:
                    first_stride = 2
            for block in range(1, blocks_per_level + 1):
                x = ResidualBlock(width, rank=3, strides=first_stride if block == 1 else 1, norm=norm,
                                  projection=level == 1 and block == 1, remat=remat,
                                  name=f"level{level}_block{block}")(x)
            pyramid[f"level{level}"] = x
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        self.pyramid_outputs = pyramid
        self.in_channels = int(in_channels)
        self.filters = filters
        self.blocks_per_level = int(blocks_per_level)
        self.downsample = downsample
        self.norm = norm
        self.channel_names = channel_names
        self.spatial_shape = None if spatial_shape is None else tuple(spatial_shape)
        self.remat = remat
        self.micro_batches = micro_batches

    def call(self, inputs, training=None, mask=None):
        if training and self.micro_batches > 1:
            def forward(x):
                return super(Encoder3D, self).call(x, training=True)

            return micro_batched_call(forward, self, inputs, self.micro_batches)
        return super().call(inputs, training=training, mask=mask)

    @property
    def rank(self):
        return 3

    @property
    def output_channels(self):
        return self.filters[-1]

    @property
    def size_divisor(self):
        """Spatial sizes must be multiples of this for the U-Net decoder to restore them."""
        return 2 ** (len(self.filters) - 1)

    @property
    def min_input_size(self):
        """Smallest side that survives the max-poolings (each floor(s/2))."""
        return 2 ** (len(self.filters) - 1)

    def feature_extractor(self):
        """A model sharing this encoder's layers that returns the per-level features (skips)."""
        return keras.Model(self.input, list(self.pyramid_outputs.values()), name=f"{self.name}_features")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "in_channels": self.in_channels,
            "filters": list(self.filters),
            "blocks_per_level": self.blocks_per_level,
            "downsample": self.downsample,
            "norm": self.norm,
            "channel_names": self.channel_names,
            "spatial_shape": None if self.spatial_shape is None else list(self.spatial_shape),
            "remat": self.remat,
            "micro_batches": self.micro_batches,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
