"""Relative patch location (Doersch et al. 2015; 3D as in Taleb et al. 2020).

The centre patch of a 3x3x3 (3x3) grid and one of its 26 (8) neighbours are shown together;
the network predicts which neighbour it is.
"""

import keras

from keras_ssl3d.layers.heads import RPLHead
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, embed_patches, patch_geometry


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RPL(PretextTask):
    """Shared encoder on (centre, neighbour) -> 64-d embeddings -> concatenated -> hidden ReLU
    layer -> softmax over the ``grid**rank - 1`` neighbour positions.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``.
        input_size: size of the volumes/images (128 / 224 by default); 128^3 -> 39^3 patches.
        grid: patches per axis (3).
        jitter: random jitter per axis in voxels (3).
        embedding_dim: patch embedding size (64).
        hidden_units: width of the head's hidden layer.
    """

    takes_input_size = True
    small_hparams = {"embedding_dim": 16, "hidden_units": 32, "jitter": 1}

    def __init__(self, encoder, input_size=None, grid=3, jitter=3, embedding_dim=64, hidden_units=1024,
                 name="rpl", **kwargs):
        encoder = check_encoder(encoder, "RPL")
        rank = encoder.rank
        size, patch = patch_geometry(encoder, input_size, grid, jitter, "RPL")
        num_positions = int(grid) ** rank - 1
        inputs = keras.Input(shape=(2, *patch, encoder.input_shape[-1]), name="patches")
        embeddings = embed_patches(encoder, inputs, embedding_dim)
        outputs = RPLHead(num_positions, hidden_units, name="head")(embeddings)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_encoder(encoder)
        self.input_size = size
        self.grid = int(grid)
        self.jitter = int(jitter)
        self.patch_shape = patch
        self.num_positions = num_positions
        self.embedding_dim = int(embedding_dim)
        self.hidden_units = int(hidden_units)

    def transform(self, batch, rng):
        return transforms.rpl_transform(batch, rng, self.grid, self.jitter)

    def get_config(self):
        config = self._base_config()
        config.update(input_size=list(self.input_size), grid=self.grid, jitter=self.jitter,
                      embedding_dim=self.embedding_dim, hidden_units=self.hidden_units)
        return config
