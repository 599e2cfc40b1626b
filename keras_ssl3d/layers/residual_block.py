"""Residual convolution block (3D and 2D), the unit of the paper's U-Net encoder."""

import keras
from keras import ops

from keras_ssl3d.layers.normalization import check_norm, make_norm

_CONV = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


def scope_asks_remat():
    """Whether a ``keras.RematScope(mode="full")`` is active (the package's models then remat their blocks)."""
    from keras.src.backend.common.remat import get_current_remat_mode

    mode = get_current_remat_mode()
    return mode is not None and mode.mode == "full"


def set_remat(model, remat=True):
    """Switch rematerialisation of every ``ResidualBlock`` in ``model`` on or off; returns ``model``.

    Works on a built or loaded model (the flag is read at call time) and updates the ``remat``
    of the package's models inside it, so a model saved afterwards keeps the setting.
    """
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(getattr(layer, "remat", None), bool):  # ResidualBlock, Encoder3D, UNetDecoder3D, Segmenter3D
            layer.remat = bool(remat)
    return model


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
        remat: rematerialise (gradient checkpointing): keep only the inputs of the block's
            three segments (conv-norm-relu, conv-norm, shortcut) for the backward pass and
            recompute the rest, trading ~1/3 more compute for far less activation memory.
            Batch-norm moving statistics are updated once per step, as without remat
            (the recomputation does not update them again). Only training calls are
            rematerialised. The flag can be changed after construction (``set_remat``); it is
            read at call time.
    """

    def __init__(self, filters, rank=3, strides=1, norm="batch", projection=False, kernel_initializer="he_normal",
                 remat=False, **kwargs):
        super().__init__(**kwargs)
        self.remat = bool(remat) or scope_asks_remat()
        self._remat_mode = None  # the block remats itself (see _remat_segment), never via Keras' wrapper
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
        for layer in (self.conv1, self.norm1, self.conv2, self.norm2):
            if layer is not None:
                layer._remat_mode = None  # built inside a RematScope: the block's own remat covers them

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
            for layer in (self.shortcut_conv, self.shortcut_norm):
                if layer is not None:
                    layer._remat_mode = None
            if self.shortcut_norm is not None:
                self.shortcut_norm.build(mid_shape)

    def call(self, inputs, training=None):
        segment = self._remat_segment if self.remat and training else self._segment  # inference keeps nothing
        x = segment(self.conv1, self.norm1, True, inputs, training)
        x = segment(self.conv2, self.norm2, False, x, training)
        shortcut = inputs
        if self.shortcut_conv is not None:
            shortcut = segment(self.shortcut_conv, self.shortcut_norm, False, inputs, training)
        return ops.relu(x + shortcut)

    @staticmethod
    def _segment(conv, norm, relu, x, training):
        x = conv(x)
        if norm is not None:
            x = norm(x, training=training)
        return ops.relu(x) if relu else x

    def _remat_segment(self, conv, norm, relu, x, training):
        """``_segment`` under ``keras.remat``, with batch norm's moving statistics updated outside.

        Keras' own ``RematScope`` cannot be used on this block: the recomputation would run the
        batch-norm update a second time (PyTorch), and ``training`` as a keyword argument breaks
        TensorFlow's and JAX's remat wrappers. Here ``training`` is a closed-over Python value,
        the batch statistics are returned by the rematerialised function, and the moving
        averages are updated from them once, exactly as ``BatchNormalization`` does.
        """
        is_batch_norm = isinstance(norm, keras.layers.BatchNormalization) and bool(training) and norm.trainable
        if not is_batch_norm:
            return keras.remat(lambda t: self._segment(conv, norm, relu, t, training))(x)

        def forward(t):
            t = ops.cast(conv(t), "float32")  # batch norm computes in float32 (as BatchNormalization does)
            axes = list(range(len(t.shape) - 1))
            mean, variance = ops.moments(t, axes=axes)
            t = ops.batch_normalization(t, mean, variance, axis=-1, offset=norm.beta, scale=norm.gamma,
                                        epsilon=norm.epsilon)
            t = ops.cast(t, norm.compute_dtype)
            return (ops.relu(t) if relu else t), mean, variance

        y, mean, variance = keras.remat(forward)(x)
        momentum = norm.momentum
        norm.moving_mean.assign(norm.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
        norm.moving_variance.assign(
            norm.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum))
        return y

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
            remat=self.remat,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
