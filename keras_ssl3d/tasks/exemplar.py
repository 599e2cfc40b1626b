"""Exemplar networks with a triplet loss (Dosovitskiy et al. 2014; 3D as in Taleb et al. 2020).

Anchor, positive (an augmented anchor) and negative (another sample) go through ONE shared
encoder and ONE shared head (the original code used three unshared heads, which the paper does
not describe and which lets the branches drift apart). Code size 1024, triplet margin 1.0 on
squared Euclidean distances of L2-normalised codes (see ``losses.TripletLoss``).
"""

import keras
from keras import ops

from keras_ssl3d.layers.heads import MLPHead
from keras_ssl3d.losses.contrastive import TripletAccuracy, TripletLoss
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, global_pool

_BRANCHES = ("anchor", "positive", "negative")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Exemplar(PretextTask):
    """Three inputs ``(anchor, positive, negative)`` of any (equal) size -> ``(N, 3, code_size)``
    L2-normalised codes. The three are concatenated along the batch axis, so the shared encoder
    and head run once on ``3N`` samples.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``.
        code_size: size of the codes (1024 in the paper).
        hidden_units: width of the head's hidden layer.
        margin: the triplet loss margin alpha (1.0).
        flip_p, rotation_p, color_p, zoom_p: augmentation probabilities of the positive and
            negative (0.5, 0.5, 0.5, 0.2 as in the appendix).
    """

    min_batch_size = 2
    small_hparams = {"code_size": 32, "hidden_units": 32}

    def __init__(self, encoder, code_size=1024, hidden_units=1024, margin=1.0, flip_p=0.5, rotation_p=0.5,
                 color_p=0.5, zoom_p=0.2, name="exemplar", **kwargs):
        encoder = check_encoder(encoder, "Exemplar")
        inputs = [keras.Input(shape=encoder.input_shape[1:], name=branch) for branch in _BRANCHES]
        stacked = ops.concatenate(inputs, axis=0)                                   # (3N, ...)
        codes = MLPHead(code_size, hidden_units, name="head")(global_pool(encoder(stacked)))
        codes = codes / ops.sqrt(ops.maximum(ops.sum(ops.square(codes), axis=-1, keepdims=True), 1e-12))
        codes = ops.transpose(ops.reshape(codes, (3, -1, code_size)), (1, 0, 2))   # (N, 3, code)
        super().__init__(inputs=inputs, outputs=codes, name=name, **kwargs)
        self._set_encoder(encoder)
        self.code_size = int(code_size)
        self.hidden_units = int(hidden_units)
        self.margin = float(margin)
        self.augmentation = {"flip_p": float(flip_p), "rotation_p": float(rotation_p),
                             "color_p": float(color_p), "zoom_p": float(zoom_p)}

    def default_loss(self):
        return TripletLoss(margin=self.margin)

    def default_metrics(self):
        return [TripletAccuracy(name="accuracy")]

    def transform(self, batch, rng):
        return transforms.exemplar_transform(batch, rng, **self.augmentation)

    def get_config(self):
        config = self._base_config()
        config.update(code_size=self.code_size, hidden_units=self.hidden_units, margin=self.margin,
                      **self.augmentation)
        return config
