"""Contrastive score layers: every query against every key of the batch (CPC, Exemplar-style InfoNCE),
and SimCLR's NT-Xent layout of two views against each other."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class ContrastiveScores(keras.layers.Layer):
    """Scores of every query against every key of the batch: ``(N, Q, E), (N, K, E) -> (N, Q, N*K)``.

    Cosine similarities with ``normalize=True`` (the default), else dot products. This is the
    ``y_pred`` layout ``InfoNCE`` expects: key ``m * K + k`` is sample ``m``'s ``k``-th key.
    """

    def __init__(self, normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def call(self, queries, keys):
        queries = ops.cast(queries, "float32")
        keys = ops.cast(keys, "float32")
        if self.normalize:
            queries = queries / ops.sqrt(ops.maximum(ops.sum(ops.square(queries), -1, keepdims=True), 1e-12))
            keys = keys / ops.sqrt(ops.maximum(ops.sum(ops.square(keys), -1, keepdims=True), 1e-12))
        all_keys = ops.reshape(keys, (-1, keys.shape[-1]))
        return ops.einsum("nqe,ke->nqk", queries, all_keys)

    def get_config(self):
        config = super().get_config()
        config.update(normalize=self.normalize)
        return config


SELF_SCORE = -1e4  # a view is no candidate for itself: exp(-1e4 / t) is 0 for any temperature below 10


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class NTXentScores(ContrastiveScores):
    """Projections of two views ``(N, 2, D)`` -> cosine scores ``(N, 2, 2N)`` of every view against
    every view of the batch, in the layout ``InfoNCE`` reads (key ``2m + v`` is sample ``m``'s view
    ``v``), with each view's score against itself set to ``SELF_SCORE``."""

    def call(self, views):
        scores = super().call(views, views)                                          # (N, 2, 2N)
        n2 = ops.shape(scores)[-1]
        own = ops.reshape(ops.eye(n2, dtype="float32"), ops.shape(scores))          # query 2m+v vs key 2m+v
        return ops.where(own > 0, SELF_SCORE, scores)
