"""Discriminative learning rates: the pretrained encoder learns at ``lr x encoder_lr_scale``, the rest at ``lr``.

Keras 3 has one learning rate per optimizer. Every Keras optimizer updates a variable in
``update_step(gradient, variable, learning_rate)``, called once per variable on TensorFlow
(``_distributed_tf_update_step``, with the ``tf.Variable`` behind the Keras one), JAX and PyTorch
(``BaseOptimizer._backend_update_step``; PyTorch's fused ``_parallel_update_step`` is used only
for the exact built-in classes, not for subclasses). `EncoderScaled` overrides that method and
multiplies the rate of the encoder's variables, so it composes with anything that sets
``optimizer.learning_rate`` (the poly schedule and lr warm-up of `keras_ssl3d.finetune.callbacks`).

The encoder's variables are named by their ``path`` (stable across two builds of the same model
and saved in the optimizer's config, so a ``.keras`` file, a checkpoint resume and the warm-up's
optimizer rebuild keep them); they are matched to the variables the optimizer is built on through
the optimizer's own variable index. The optimizer's variables are those of the base class, so
checkpoints are unchanged. A scale of 1 compiles the plain optimizer (`finetune_optimizer`).
"""

import math

import keras

from keras_ssl3d.errors import ConfigError


class EncoderScaled:
    """Mixin for a Keras optimizer: the variables whose ``path`` is in ``encoder_paths`` learn at
    ``lr * encoder_lr_scale``, the others at ``lr``."""

    def __init__(self, *args, encoder_lr_scale=1.0, encoder_paths=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_lr_scale = check_scale(encoder_lr_scale)
        self.encoder_paths = tuple(str(p) for p in encoder_paths)
        self._scaled = []

    def build(self, variables):
        super().build(variables)
        paths = set(self.encoder_paths)
        self._scaled = [v.path in paths for v in variables]  # by the optimizer's own variable index

    def update_step(self, gradient, variable, learning_rate):
        if self._scaled[self._get_variable_index(variable)]:
            learning_rate = keras.ops.multiply(learning_rate, self.encoder_lr_scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "encoder_lr_scale": self.encoder_lr_scale,
                "encoder_paths": list(self.encoder_paths)}


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class EncoderScaledAdam(EncoderScaled, keras.optimizers.Adam):
    """Adam with the encoder's learning rate scaled (see `EncoderScaled`)."""


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class EncoderScaledSGD(EncoderScaled, keras.optimizers.SGD):
    """SGD with the encoder's learning rate scaled (see `EncoderScaled`)."""


def check_scale(scale):
    """``scale`` as a float; a one-line `ConfigError` unless it is finite and > 0."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--encoder-lr-scale must be a finite number > 0, got {scale}")
    return value


def applied_scale(encoder, scale):
    """The scale a run applies: ``scale`` for a pretrained encoder, 1 for ``--encoder none`` (scratch)."""
    return 1.0 if str(encoder).lower() == "none" else check_scale(scale)


def scale_note(encoder, scale):
    """A line saying ``--encoder-lr-scale`` does nothing for a scratch run, or None."""
    if str(encoder).lower() == "none" and float(scale) != 1.0:
        return (f"Encoder lr scale: --encoder-lr-scale {float(scale):g} applies to a pretrained encoder; "
                "--encoder none trains every layer at --lr")
    return None


def encoder_paths(model):
    """The ``path`` of every variable of ``model.encoder``; a `ConfigError` if one also names another variable."""
    encoder_ids = {id(v) for v in model.encoder.weights}
    paths = [v.path for v in model.encoder.weights]
    clash = sorted({v.path for v in model.weights if id(v) not in encoder_ids} & set(paths))
    if clash:
        raise ConfigError(f"cannot scale the encoder's learning rate: variable path {clash[0]!r} is in the encoder "
                          "and outside it")
    return paths


def finetune_optimizer(model, lr, encoder_lr_scale=1.0, base="adam"):
    """The optimizer of a fine-tuning run: ``base`` (``"adam"`` or ``"sgd"``) at ``lr``, its encoder at
    ``lr * encoder_lr_scale`` (the plain Keras optimizer when the scale is 1)."""
    plain, scaled = {"adam": (keras.optimizers.Adam, EncoderScaledAdam),
                     "sgd": (keras.optimizers.SGD, EncoderScaledSGD)}[base]
    if check_scale(encoder_lr_scale) == 1.0:
        return plain(lr)
    return scaled(lr, encoder_lr_scale=encoder_lr_scale, encoder_paths=encoder_paths(model))
