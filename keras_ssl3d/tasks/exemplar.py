"""Exemplar networks with a triplet loss (Dosovitskiy et al. 2014; 3D as in Taleb et al. 2020).

Anchor and positive (an augmented anchor) go through ONE shared encoder and ONE shared head
(the original code used three unshared heads, which the paper does not describe and which lets
the branches drift apart). The negative of sample ``i`` is another sample of the batch: the
positive (augmented) code of sample ``i - 1`` (cyclically; batches are shuffled every epoch, so
the pairing changes). The original code fed a third, separately augmented volume per sample as
the negative; taking it from the batch gives the same kind of negative (another subject,
augmented) while the encoder runs on 2 volumes per sample instead of 3: a third less compute and
activation memory. At 128^3 the encoder's 4 volumes of a batch of 2 still need > 9 GB at once;
``Encoder3D(micro_batches=4)`` (``pretrain --micro-batches 4``) back-propagates them one at a time
(6.3 GB) and keeps these in-batch negatives. Code size 1024, triplet margin 1.0 on squared
Euclidean distances of L2-normalised codes (see ``losses.TripletLoss``); batches need >= 2
samples.
"""

import keras
from keras import ops

from keras_ssl3d.layers.augment3d import ExemplarAugment3D, resolve_augment_on
from keras_ssl3d.layers.heads import MLPHead
from keras_ssl3d.losses.contrastive import TripletAccuracy, TripletLoss
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, global_pool

_BRANCHES = ("anchor", "positive")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Exemplar(PretextTask):
    """Two inputs ``(anchor, positive)`` of any (equal) size -> ``(N, 3, code_size)``
    L2-normalised codes ``(anchor, positive, negative)``, the negative of sample ``i`` being
    the positive code of sample ``i - 1`` of the batch. Anchors and positives are concatenated
    along the batch axis, so the shared encoder and head run once on ``2N`` samples.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``.
        code_size: size of the codes (1024 in the paper).
        hidden_units: width of the head's hidden layer.
        margin: the triplet loss margin alpha (1.0).
        flip_p, rotation_p, color_p, zoom_p: augmentation probabilities of the positive
            (0.5, 0.5, 0.5, 0.2 as in the appendix).
        augment_on: ``"host"`` (numpy, in the data pipeline), ``"device"`` (``ExemplarAugment3D``
            inside the model: the pipeline streams the volumes as they are) or ``"auto"`` (device
            when an accelerator is visible; ``task.augment_note`` says which). Saved as asked.
    """

    min_batch_size = 2
    uses_batch_negatives = True  # sample i's negative is sample i - 1's positive
    small_hparams = {"code_size": 32, "hidden_units": 32}

    def __init__(self, encoder, code_size=1024, hidden_units=1024, margin=1.0, flip_p=0.5, rotation_p=0.5,
                 color_p=0.5, zoom_p=0.2, augment_on="auto", name="exemplar", **kwargs):
        encoder = check_encoder(encoder, "Exemplar")
        augmentation = {"flip_p": float(flip_p), "rotation_p": float(rotation_p),
                        "color_p": float(color_p), "zoom_p": float(zoom_p)}
        augment_request = augment_on
        augment_on, augment_note = resolve_augment_on(augment_on, encoder.rank)
        inputs = [keras.Input(shape=encoder.input_shape[1:], name=branch) for branch in _BRANCHES]
        branches = list(inputs)
        if augment_on == "device":  # the positive is augmented here, in the training step
            branches[1] = ExemplarAugment3D(**augmentation, name="augment")(inputs[1])
        stacked = ops.concatenate(branches, axis=0)                                 # (2N, ...)
        codes = MLPHead(code_size, hidden_units, name="head")(global_pool(encoder(stacked)))
        codes = codes / ops.sqrt(ops.maximum(ops.sum(ops.square(codes), axis=-1, keepdims=True), 1e-12))
        codes = ops.reshape(codes, (2, -1, code_size))                             # (2, N, code)
        anchor, positive = codes[0], codes[1]
        negative = ops.roll(positive, shift=1, axis=0)                              # sample i-1's positive
        codes = ops.stack([anchor, positive, negative], axis=1)                     # (N, 3, code)
        super().__init__(inputs=inputs, outputs=codes, name=name, **kwargs)
        self._set_encoder(encoder)
        self.code_size = int(code_size)
        self.hidden_units = int(hidden_units)
        self.margin = float(margin)
        self.augmentation = augmentation
        self.augment_request, self.augment_on, self.augment_note = augment_request, augment_on, augment_note

    def default_loss(self):
        return TripletLoss(margin=self.margin)

    def default_metrics(self):
        return [TripletAccuracy(name="accuracy")]

    def chance_accuracy(self, batch_size):
        return 0.5  # the positive is nearer than the negative, or not

    def transform(self, batch, rng):
        if self.augment_on == "device":  # the model augments the positive
            return transforms.exemplar_transform(batch, rng, augment=False)
        return transforms.exemplar_transform(batch, rng, **self.augmentation)

    def get_config(self):
        config = self._base_config()
        config.update(code_size=self.code_size, hidden_units=self.hidden_units, margin=self.margin,
                      **self.augmentation)
        config["augment_on"] = self.augment_request  # as asked: auto decides again where the model is loaded
        return config
