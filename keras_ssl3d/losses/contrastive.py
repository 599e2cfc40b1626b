"""Contrastive losses of the paper's tasks: InfoNCE (CPC) and the triplet loss (Exemplar).

Both take *what the model outputs* as ``y_pred`` and need no per-batch label bookkeeping from the
data pipeline, so they work with ``model.fit`` on any batch size:

- ``InfoNCE``: ``y_pred`` are similarity scores of every query against every key of the batch,
  shape ``(N, Q, N * K)`` (``N`` samples, ``Q`` queries and ``K`` keys per sample); ``y_true``
  ``(N, Q)`` is the index of each query's positive among *its own sample's* ``K`` keys. The
  loss is a softmax cross-entropy of the positive against all ``N * K - 1`` other keys of the
  batch (the negatives), with a temperature. The plain pairwise form (query ``i`` matches key
  ``i``) is ``y_pred`` of shape ``(N, N)`` and ``y_true`` all zeros.
- ``TripletLoss``: ``y_pred`` stacks ``(anchor, positive, negative)`` codes as ``(N, 3, D)``;
  ``y_true`` is ignored.
"""

import keras
from keras import ops


def _scores_and_labels(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) == 2:  # pairwise form: (N, N)
        y_pred = ops.expand_dims(y_pred, 1)
    n = ops.shape(y_pred)[0]
    keys_per_sample = ops.shape(y_pred)[-1] // n
    y_true = ops.reshape(ops.cast(y_true, "int32"), (n, -1))
    labels = ops.expand_dims(ops.arange(n, dtype="int32") * ops.cast(keys_per_sample, "int32"), 1) + y_true
    return y_pred, labels


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class InfoNCE(keras.losses.Loss):
    """InfoNCE (van den Oord et al. 2018): softmax over the positive vs. all other keys in the batch.

    ``loss = -log( exp(s_pos / t) / sum_k exp(s_k / t) )`` averaged over queries, where ``s`` are
    the scores in ``y_pred`` (cosine similarities in this package's CPC) and ``t`` the
    temperature. See the module docstring for the shapes.

    Args:
        temperature: divides the scores; small values sharpen the softmax (0.1 suits cosine
            similarities in [-1, 1]; use 1.0 for raw dot products).
    """

    def __init__(self, temperature=0.1, reduction="sum_over_batch_size", name="info_nce", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        scores, labels = _scores_and_labels(y_true, y_pred)
        logits = ops.cast(scores, "float32") / self.temperature
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config


def info_nce_accuracy(y_true, y_pred):
    """Top-1 accuracy of the positive among all keys of the batch (CPC's pretext accuracy)."""
    scores, labels = _scores_and_labels(y_true, y_pred)
    predicted = ops.cast(ops.argmax(scores, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, labels), "float32")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class InfoNCEAccuracy(keras.metrics.MeanMetricWrapper):
    """How often the positive key scores highest among all ``N * K`` keys of the batch."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=info_nce_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _l2_normalize(x):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


def triplet_distances(y_pred, normalize=True):
    """Squared Euclidean distances ``(d(anchor, positive), d(anchor, negative))`` of ``(N, 3, D)`` codes."""
    codes = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if normalize:
        codes = _l2_normalize(codes)
    anchor, positive, negative = codes[:, 0], codes[:, 1], codes[:, 2]
    d_pos = ops.sum(ops.square(anchor - positive), axis=-1)
    d_neg = ops.sum(ops.square(anchor - negative), axis=-1)
    return d_pos, d_neg


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class TripletLoss(keras.losses.Loss):
    """Triplet margin loss ``max(d(a, p) - d(a, n) + margin, 0)`` (Exemplar; margin alpha = 1.0 in the paper).

    The distance is the squared Euclidean distance between L2-normalised codes,
    ``d = |a/|a| - p/|p||^2 = 2 - 2 cos(a, p)``, which lies in [0, 4]. Normalising first is what
    gives the margin a meaning: on raw codes the network can satisfy any margin just by scaling
    its outputs up, and the fixed alpha = 1.0 would then constrain nothing. With normalised codes
    a margin of 1.0 asks the positive's cosine similarity to beat the negative's by 0.5.
    ``normalize=False`` gives the raw squared Euclidean distance (FaceNet's form).

    Args:
        margin: alpha; 1.0 as in the paper.
        normalize: L2-normalise the codes before measuring distances.
    """

    def __init__(self, margin=1.0, normalize=True, reduction="sum_over_batch_size", name="triplet_loss",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.margin = float(margin)
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        d_pos, d_neg = triplet_distances(y_pred, self.normalize)
        return ops.relu(d_pos - d_neg + self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, normalize=self.normalize)
        return config


def triplet_accuracy(y_true, y_pred):
    """Fraction of triplets whose positive is closer to the anchor than the negative."""
    d_pos, d_neg = triplet_distances(y_pred, normalize=True)
    return ops.cast(ops.less(d_pos, d_neg), "float32")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class TripletAccuracy(keras.metrics.MeanMetricWrapper):
    """Exemplar's pretext accuracy: ``d(anchor, positive) < d(anchor, negative)`` (chance: 0.5)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=triplet_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
