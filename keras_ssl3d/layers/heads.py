"""Heads put on top of an encoder during pretraining (removed for fine-tuning).

Following the paper's appendix (after SimCLR, Chen et al. 2020), every pretext classifier or
projection is preceded by a non-linear hidden layer: ``Dense(hidden, relu) -> Dense(out)``.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class MLPHead(keras.layers.Layer):
    """Projection / classification head with one hidden ReLU layer.

    ``(..., features) -> (..., output_units)``. The output layer runs in float32 so that a
    softmax stays accurate under mixed precision.

    Args:
        output_units: classes (with ``output_activation="softmax"``) or projection size.
        hidden_units: width of the hidden ReLU layer.
        output_activation: ``None`` (logits / linear projection), ``"softmax"``, ...
    """

    def __init__(self, output_units, hidden_units=1024, output_activation=None, **kwargs):
        super().__init__(**kwargs)
        self.output_units = int(output_units)
        self.hidden_units = int(hidden_units)
        self.output_activation = output_activation
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
        self.out = keras.layers.Dense(self.output_units, activation=output_activation, dtype="float32",
                                      name="output")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build((*input_shape[:-1], self.hidden_units))

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_units)

    def get_config(self):
        config = super().get_config()
        config.update(output_units=self.output_units, hidden_units=self.hidden_units,
                      output_activation=self.output_activation)
        return config


class _OrderedEmbeddingsHead(MLPHead):
    """An ``MLPHead`` over patch embeddings ``(N, P, E)`` concatenated in their given order."""

    def build(self, input_shape):
        if input_shape[-2] is None or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} needs a known number of patches and embedding size, "
                             f"got {input_shape}")
        flat = (input_shape[0], input_shape[-2] * input_shape[-1])
        super().build(flat)

    def call(self, inputs):
        flat = ops.reshape(inputs, (-1, inputs.shape[-2] * inputs.shape[-1]))
        return super().call(flat)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_units)


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class JigsawHead(_OrderedEmbeddingsHead):
    """Jigsaw classifier: the patch embeddings, concatenated in the order the (shuffled) patches
    were given, -> hidden ReLU layer -> softmax over the permutation set."""

    def __init__(self, num_permutations, hidden_units=1024, **kwargs):
        kwargs.pop("output_units", None)
        kwargs.pop("output_activation", None)
        super().__init__(output_units=num_permutations, hidden_units=hidden_units, output_activation="softmax",
                         **kwargs)
        self.num_permutations = self.output_units

    def get_config(self):
        config = super().get_config()
        config["num_permutations"] = config.pop("output_units")
        config.pop("output_activation")
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RPLHead(_OrderedEmbeddingsHead):
    """Relative patch location: (centre, neighbour) embeddings ``(N, 2, E)`` concatenated ->
    hidden ReLU layer -> softmax over the neighbour positions (26 in 3D, 8 in 2D)."""

    def __init__(self, num_positions=26, hidden_units=1024, **kwargs):
        kwargs.pop("output_units", None)
        kwargs.pop("output_activation", None)
        super().__init__(output_units=num_positions, hidden_units=hidden_units, output_activation="softmax",
                         **kwargs)
        self.num_positions = self.output_units

    def get_config(self):
        config = super().get_config()
        config["num_positions"] = config.pop("output_units")
        config.pop("output_activation")
        return config
