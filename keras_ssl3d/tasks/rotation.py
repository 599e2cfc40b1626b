"""Rotation prediction (Gidaris et al. 2018, 3D as in Taleb et al. 2020).

3D: 10 classes, all reachable: the identity and 90/180/270 degrees about each of the three axes
(``transforms.ROTATIONS_3D``). 2D: 4 classes (0/90/180/270 degrees).
"""

import keras

from keras_ssl3d.layers.heads import MLPHead
from keras_ssl3d.tasks import transforms
from keras_ssl3d.tasks.base import PretextTask, check_encoder, global_pool


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class Rotation(PretextTask):
    """Encoder -> global pooling -> hidden ReLU layer -> softmax over the rotation classes.

    Inputs are whole (rotated) volumes/images of any size (cubes/squares, so that every
    rotation keeps the shape); ``task.transform`` makes them from unlabeled batches.

    Args:
        encoder: an ``Encoder3D`` (10 classes) or ``Encoder2D`` (4 classes).
        hidden_units: width of the head's hidden layer.
    """

    cubic_inputs = True
    small_hparams = {"hidden_units": 32}

    def __init__(self, encoder, hidden_units=1024, name="rotation", **kwargs):
        encoder = check_encoder(encoder, "Rotation")
        num_classes = len(transforms.rotations(encoder.rank))
        inputs = keras.Input(shape=encoder.input_shape[1:], name="volume" if encoder.rank == 3 else "image")
        features = global_pool(encoder(inputs))
        outputs = MLPHead(num_classes, hidden_units, output_activation="softmax", name="head")(features)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_encoder(encoder)
        self.hidden_units = int(hidden_units)
        self.num_classes = num_classes

    def transform(self, batch, rng):
        return transforms.rotation_transform(batch, rng, self.rank)

    def get_config(self):
        config = self._base_config()
        config.update(hidden_units=self.hidden_units)
        return config
