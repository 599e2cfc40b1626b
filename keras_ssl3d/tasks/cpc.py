"""Contrastive predictive coding (van den Oord et al. 2018; 3D as in Taleb et al. 2020).

The volume is cut into a grid of jittered patches (4x4x4 by default: 29^3 patches of a 128^3
volume). Each patch goes through the encoder, global pooling and a projection to a 64-d
embedding; a GRU context network (code size 1024) runs down the grid rows and, from the
context of rows ``0..i``, predicts the embeddings of the patches ``1..steps`` rows below.
InfoNCE scores each prediction against every patch embedding of the batch: the true patch is
the positive, all others (same volume or not) are negatives. The pretext accuracy is how
often the true patch scores highest among them (chance: ``1 / (batch * patches)``).
"""

import keras
from keras import ops

from keras_ssl3d.layers.cpc import CPCContext, CPCPredictor
from keras_ssl3d.layers.scores import ContrastiveScores
from keras_ssl3d.losses.contrastive import InfoNCE, InfoNCEAccuracy
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, embed_patches, patch_geometry


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class CPC(PretextTask):
    """Patch grid -> embeddings -> row-wise context -> predictions -> scores for ``InfoNCE``.

    The model's output is the score tensor ``(N, Q, N*P)``; its targets ``(N, Q)`` (from the
    transform) are the positives' indices in the sample's own grid.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``.
        input_size: volume/image size (128 / 224 by default).
        grid: patches per axis (4).
        jitter: random jitter per axis in voxels (3).
        embedding_dim: patch embedding size (64).
        code_size: context size (1024 in the paper).
        steps: rows predicted ahead (2).
        temperature: InfoNCE temperature of the default loss (scores are cosine similarities).
    """

    takes_input_size = True
    small_hparams = {"grid": 3, "jitter": 1, "code_size": 32, "embedding_dim": 16}

    def __init__(self, encoder, input_size=None, grid=4, jitter=3, embedding_dim=64, code_size=1024, steps=2,
                 temperature=0.1, name="cpc", **kwargs):
        encoder = check_encoder(encoder, "CPC")
        rank = encoder.rank
        size, patch = patch_geometry(encoder, input_size, grid, jitter, "CPC")
        grid_shape = (int(grid),) * rank
        num_patches = int(grid) ** rank
        inputs = keras.Input(shape=(num_patches, *patch, encoder.input_shape[-1]), name="patches")
        embeddings = embed_patches(encoder, inputs, embedding_dim)                  # (N, P, E)
        grid_embeddings = ops.reshape(embeddings, (-1, *grid_shape, embedding_dim))
        context = CPCContext(code_size, name="context")(grid_embeddings)            # (N, G, code)
        predictor = CPCPredictor(grid_shape, embedding_dim, steps, name="predictor")
        queries = predictor(context)                                                # (N, Q, E)
        scores = ContrastiveScores(name="scores")(queries, embeddings)              # (N, Q, N*P)
        super().__init__(inputs=inputs, outputs=scores, name=name, **kwargs)
        self._set_encoder(encoder)
        self.input_size = size
        self.grid = int(grid)
        self.jitter = int(jitter)
        self.patch_shape = patch
        self.embedding_dim = int(embedding_dim)
        self.code_size = int(code_size)
        self.steps = int(steps)
        self.temperature = float(temperature)
        self.target_indices = predictor.target_indices()

    uses_batch_negatives = True  # every patch of the batch is a key

    def chance_accuracy(self, batch_size):
        return 1.0 / (int(batch_size) * self.grid ** self.encoder.rank)

    def default_loss(self):
        return InfoNCE(temperature=self.temperature)

    def default_metrics(self):
        return [InfoNCEAccuracy(name="accuracy")]

    def transform(self, batch, rng):
        return transforms.cpc_transform(batch, rng, self.grid, self.jitter, self.target_indices)

    def get_config(self):
        config = self._base_config()
        config.update(input_size=list(self.input_size), grid=self.grid, jitter=self.jitter,
                      embedding_dim=self.embedding_dim, code_size=self.code_size, steps=self.steps,
                      temperature=self.temperature)
        return config
