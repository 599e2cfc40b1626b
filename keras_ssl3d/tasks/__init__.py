"""The five self-supervised pretext tasks (3D and 2D) as trainable Keras models.

``task = keras_ssl3d.tasks.Jigsaw(encoder=Encoder3D())``; ``task.compile()`` (paper defaults);
``task.fit(task.dataset(volumes, batch_size=2), epochs=...)``; ``task.encoder`` is the trained
encoder. ``TASKS`` maps the CLI names to the classes.
"""

from keras_ssl3d.tasks.cpc import CPC
from keras_ssl3d.tasks.exemplar import Exemplar
from keras_ssl3d.tasks.jigsaw import Jigsaw
from keras_ssl3d.tasks.permutations import generate_permutations, hamming_stats, load_permutations
from keras_ssl3d.tasks.rotation import Rotation
from keras_ssl3d.tasks.rpl import RPL

TASKS = {"cpc": CPC, "rpl": RPL, "jigsaw": Jigsaw, "rotation": Rotation, "exemplar": Exemplar}

__all__ = ["CPC", "RPL", "TASKS", "Exemplar", "Jigsaw", "Rotation", "generate_permutations",
           "hamming_stats", "load_permutations"]
