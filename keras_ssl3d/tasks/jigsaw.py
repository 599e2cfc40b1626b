"""Jigsaw puzzles (Noroozi & Favaro 2016; 3D as in Taleb et al. 2020).

A 3x3x3 (3D) or 3x3 (2D) grid of jittered patches is shuffled by one permutation of a fixed
set (1000 of 27 / 100 of 9, chosen for maximal Hamming distance, ``tasks.permutations``); the
network sees the shuffled patches and classifies which permutation was applied.
"""

import keras

from keras_ssl3d.layers.heads import JigsawHead
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, embed_patches, patch_geometry
from keras_ssl3d.tasks.permutations import load_permutations

DEFAULT_PERMUTATIONS = {3: 1000, 2: 100}


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Jigsaw(PretextTask):
    """Shared encoder on every patch -> 64-d embeddings concatenated in the given (shuffled)
    order -> hidden ReLU layer -> softmax over the permutation set.

    Args:
        encoder: ``Encoder3D`` or ``Encoder2D``; one copy encodes all patches of the batch at once.
        input_size: size of the volumes/images the transform cuts (128 / 224 by default); sets
            the patch size, e.g. 128^3 -> 39^3 patches (see ``tasks.patches``).
        grid: patches per axis (3).
        jitter: random jitter per axis in voxels (3).
        num_permutations: size of the permutation set (1000 in 3D, 100 in 2D).
        permutation_seed: seed of the (cached, deterministic) permutation set.
        embedding_dim: patch embedding size (64).
        hidden_units: width of the head's hidden layer.
    """

    takes_input_size = True
    small_hparams = {"embedding_dim": 16, "hidden_units": 32, "jitter": 1, "num_permutations": 10}

    def __init__(self, encoder, input_size=None, grid=3, jitter=3, num_permutations=None, permutation_seed=0,
                 embedding_dim=64, hidden_units=1024, name="jigsaw", **kwargs):
        encoder = check_encoder(encoder, "Jigsaw")
        rank = encoder.rank
        size, patch = patch_geometry(encoder, input_size, grid, jitter, "Jigsaw")
        num_permutations = int(num_permutations or DEFAULT_PERMUTATIONS[rank])
        num_patches = int(grid) ** rank
        inputs = keras.Input(shape=(num_patches, *patch, encoder.input_shape[-1]), name="patches")
        embeddings = embed_patches(encoder, inputs, embedding_dim)
        outputs = JigsawHead(num_permutations, hidden_units, name="head")(embeddings)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_encoder(encoder)
        self.input_size = size
        self.grid = int(grid)
        self.jitter = int(jitter)
        self.patch_shape = patch
        self.num_permutations = num_permutations
        self.permutation_seed = int(permutation_seed)
        self.embedding_dim = int(embedding_dim)
        self.hidden_units = int(hidden_units)
        self._permutations = None

    @property
    def permutations(self):
        """The ``(num_permutations, grid**rank)`` permutation set (generated once, then cached)."""
        if self._permutations is None:
            self._permutations = load_permutations(self.num_permutations, self.grid ** self.rank,
                                                   seed=self.permutation_seed)
        return self._permutations

    def transform(self, batch, rng):
        return transforms.jigsaw_transform(batch, rng, self.permutations, self.grid, self.jitter)

    def get_config(self):
        config = self._base_config()
        config.update(input_size=list(self.input_size), grid=self.grid, jitter=self.jitter,
                      num_permutations=self.num_permutations, permutation_seed=self.permutation_seed,
                      embedding_dim=self.embedding_dim, hidden_units=self.hidden_units)
        return config
