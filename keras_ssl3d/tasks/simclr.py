"""SimCLR: contrast two augmented views of each volume (Chen et al., ICML 2020).

Each sample of the batch is augmented twice with the Exemplar augmentations (flip, rotation,
brightness/contrast, zoom; ``transforms.exemplar_augment``). Both views go through the encoder,
global pooling and a projection head (one hidden ReLU layer, 128-d output). NT-Xent is
``InfoNCE`` on cosine similarities: each of the ``2N`` views must pick its partner view among the
``2N - 1`` other views of the batch (1 positive, ``2N - 2`` negatives), at a temperature (0.1).
The pretext accuracy is that top-1 retrieval of the partner (chance: ``1 / (2N - 1)``).
"""

import keras
import numpy as np
from keras import ops

from keras_ssl3d.errors import DataError
from keras_ssl3d.layers.augment3d import ExemplarAugment3D, resolve_augment_on
from keras_ssl3d.layers.scores import SELF_SCORE, NTXentScores  # noqa: F401  (SELF_SCORE: imported from here too)
from keras_ssl3d.layers.heads import MLPHead
from keras_ssl3d.losses.contrastive import InfoNCE, InfoNCEAccuracy
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, global_pool

@keras.saving.register_keras_serializable(package="keras_ssl3d")
class SimCLR(PretextTask):
    """Two views ``(view1, view2)`` -> shared encoder + projection head -> NT-Xent scores ``(N, 2, 2N)``.

    Targets ``(N, 2)`` are ``[1, 0]``: view 0's positive is its sample's key 1 and vice versa.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``.
        projection_dim: output of the projection head (128 in SimCLR).
        hidden_units: hidden layer of the head (SimCLR: the encoder's feature width, the default).
        temperature: NT-Xent temperature (0.1).
        flip_p, rotation_p, color_p, zoom_p: the Exemplar augmentation probabilities.
        augment_on: ``"host"`` (numpy), ``"device"`` (two ``ExemplarAugment3D`` in the model) or
            ``"auto"`` (device when an accelerator is visible); see ``Exemplar``.
    """

    min_batch_size = 2
    uses_batch_negatives = True  # the other views of the batch are the negatives
    small_hparams = {"projection_dim": 32, "hidden_units": 32}

    def __init__(self, encoder, projection_dim=128, hidden_units=None, temperature=0.1, flip_p=0.5,
                 rotation_p=0.5, color_p=0.5, zoom_p=0.2, augment_on="auto", name="simclr", **kwargs):
        encoder = check_encoder(encoder, "SimCLR")
        augmentation = {"flip_p": float(flip_p), "rotation_p": float(rotation_p),
                        "color_p": float(color_p), "zoom_p": float(zoom_p)}
        augment_request = augment_on
        augment_on, augment_note = resolve_augment_on(augment_on, encoder.rank)
        inputs = [keras.Input(shape=encoder.input_shape[1:], name=f"view{i}") for i in (1, 2)]
        views = list(inputs)
        if augment_on == "device":  # both views are augmented here, in the training step
            views = [ExemplarAugment3D(**augmentation, name=f"augment{i}")(v) for i, v in enumerate(inputs, 1)]
        features = global_pool(encoder(ops.concatenate(views, axis=0)))           # (2N, F)
        hidden_units = int(hidden_units or features.shape[-1])
        projections = MLPHead(projection_dim, hidden_units, name="projection")(features)
        views = ops.transpose(ops.reshape(projections, (2, -1, projection_dim)), (1, 0, 2))  # (N, 2, D)
        scores = NTXentScores(name="scores")(views)
        super().__init__(inputs=inputs, outputs=scores, name=name, **kwargs)
        self._set_encoder(encoder)
        self.projection_dim = int(projection_dim)
        self.hidden_units = hidden_units
        self.temperature = float(temperature)
        self.augmentation = augmentation
        self.augment_request, self.augment_on, self.augment_note = augment_request, augment_on, augment_note

    def default_loss(self):
        return InfoNCE(temperature=self.temperature)

    def default_metrics(self):
        return [InfoNCEAccuracy(name="accuracy")]

    def chance_accuracy(self, batch_size):
        return 1.0 / (2 * int(batch_size) - 1)  # the partner view among the 2N - 1 other views

    def transform(self, batch, rng):
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != self.rank + 2:
            raise DataError(f"simclr expects a batch of {self.rank}D samples with channels, got shape {batch.shape}")
        if len(batch) < 2:
            raise DataError("simclr needs batches of at least 2 samples (negatives are the other samples)")
        if self.augment_on == "device":  # the model augments both views
            views = (batch, batch)
        else:
            views = tuple(transforms.exemplar_augment(batch, rng, **self.augmentation) for _ in range(2))
        return views, np.tile(np.array([[1, 0]], np.int32), (len(batch), 1))

    def get_config(self):
        config = self._base_config()
        config.update(projection_dim=self.projection_dim, hidden_units=self.hidden_units,
                      temperature=self.temperature, **self.augmentation)
        config["augment_on"] = self.augment_request  # as asked: auto decides again where the model is loaded
        return config
