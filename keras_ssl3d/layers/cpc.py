"""Contrastive predictive coding over a patch grid: context network and predictions (the scores: ``layers.scores``).

The grid's first axis is its "rows" (depth in 3D, height in 2D). The context at row ``i``
aggregates all rows ``0..i`` autoregressively (a GRU running down the rows, each row's patch
embeddings concatenated), so it never sees the rows it must predict. From the context at row
``i``, a linear map per step ``l = 1..steps`` predicts the embedding of every patch in row
``i + l`` (as in van den Oord et al.'s image CPC). Predictions are scored against *every* patch
embedding of the batch; ``keras_ssl3d.losses.InfoNCE`` turns the scores into the loss.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class CPCContext(keras.layers.Layer):
    """Autoregressive context over grid rows: ``(N, G, *cells, E) -> (N, G, code_size)``.

    Args:
        code_size: the context (latent code) size; 1024 in the paper.
    """

    def __init__(self, code_size=1024, **kwargs):
        super().__init__(**kwargs)
        self.code_size = int(code_size)
        self.gru = keras.layers.GRU(self.code_size, return_sequences=True, name="gru")

    def build(self, input_shape):
        row = int(np.prod(input_shape[2:]))
        self.gru.build((input_shape[0], input_shape[1], row))

    def call(self, embeddings):
        shape = embeddings.shape
        rows = ops.reshape(embeddings, (-1, shape[1], int(np.prod(shape[2:]))))
        return self.gru(rows)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.code_size)

    def get_config(self):
        config = super().get_config()
        config.update(code_size=self.code_size)
        return config


def cpc_prediction_pairs(rows, steps):
    """The ``(context_row, step)`` pairs that have a target row inside the grid, in output order."""
    return [(i, step) for step in range(1, steps + 1) for i in range(rows - step)]


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class CPCPredictor(keras.layers.Layer):
    """Predicts the embeddings of the next ``steps`` rows from each row's context.

    ``(N, G, code) -> (N, Q, E)`` with one query per (context row ``i``, step ``l``, cell of row
    ``i + l``) for all pairs with ``i + l < G``; ``target_indices()`` gives, for each query, the
    index (row-major over the grid) of the patch it should match.

    Args:
        grid: the patch grid, e.g. ``(4, 4, 4)`` or ``(4, 4)``.
        embedding_dim: size of the patch embeddings to predict (64 in the paper).
        steps: how many rows ahead to predict.
    """

    def __init__(self, grid, embedding_dim=64, steps=2, **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(int(g) for g in grid)
        self.embedding_dim = int(embedding_dim)
        self.steps = int(steps)
        if self.steps < 1 or self.steps >= self.grid[0]:
            raise ValueError(f"steps must be in 1..{self.grid[0] - 1} for a grid of {self.grid[0]} rows")
        self.cells_per_row = int(np.prod(self.grid[1:]))
        self.projections = [keras.layers.Dense(self.cells_per_row * self.embedding_dim, name=f"step{s}")
                            for s in range(1, self.steps + 1)]

    def build(self, input_shape):
        for dense in self.projections:
            dense.build((input_shape[0], input_shape[2]))

    def target_indices(self):
        indices = []
        for i, step in cpc_prediction_pairs(self.grid[0], self.steps):
            row = i + step
            indices.extend(range(row * self.cells_per_row, (row + 1) * self.cells_per_row))
        return np.array(indices, dtype=np.int32)

    def call(self, context):
        queries = []
        for step, dense in enumerate(self.projections, start=1):
            rows = self.grid[0] - step
            pred = dense(context[:, :rows])  # rows 0..G-1-step predict rows step..G-1
            queries.append(ops.reshape(pred, (-1, rows * self.cells_per_row, self.embedding_dim)))
        return ops.concatenate(queries, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.target_indices()), self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(grid=list(self.grid), embedding_dim=self.embedding_dim, steps=self.steps)
        return config
