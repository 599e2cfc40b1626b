"""The self-supervised pretext tasks as trainable Keras models: the paper's five (3D and 2D) and
Models Genesis (3D), MAE for CNNs (3D) and SimCLR (3D and 2D).

``task = keras_ssl3d.tasks.Jigsaw(encoder=Encoder3D())``; ``task.compile()`` (paper defaults);
``task.fit(task.dataset(volumes, batch_size=2), epochs=...)``; ``task.encoder`` is the trained
encoder. ``TASKS`` maps the CLI names to the classes.
"""

import importlib

from keras_ssl3d import names
from keras_ssl3d.tasks.cpc import CPC
from keras_ssl3d.tasks.exemplar import Exemplar
from keras_ssl3d.tasks.genesis import Genesis
from keras_ssl3d.tasks.jigsaw import Jigsaw
from keras_ssl3d.tasks.mae import MAE
from keras_ssl3d.tasks.permutations import generate_permutations, hamming_stats, load_permutations
from keras_ssl3d.tasks.rotation import Rotation
from keras_ssl3d.tasks.rpl import RPL
from keras_ssl3d.tasks.simclr import SimCLR


def _load(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# The one registry of tasks (from the table in keras_ssl3d.names): CLI choices, the demo, the zoo and
# the benchmarks read it.
TASKS = {name: _load(spec) for name, spec in names.TASKS.items()}
TASK_NAMES = names.TASK_NAMES


def make_task(name, encoder, input_size=None, **hparams):
    """``TASKS[name](encoder, **hparams)``, passing ``input_size`` only to tasks that take it."""
    from keras_ssl3d.errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    cls = TASKS[name]
    if getattr(encoder, "rank", None) not in cls.ranks:
        raise ConfigError(f"{name} supports {' and '.join(f'{r}D' for r in cls.ranks)} encoders, "
                          f"got a {getattr(encoder, 'rank', '?')}D one")
    if cls.takes_input_size:
        hparams["input_size"] = input_size
    return cls(encoder, **hparams)


__all__ = ["CPC", "MAE", "RPL", "TASKS", "TASK_NAMES", "make_task", "Exemplar", "Genesis", "Jigsaw", "Rotation",
           "SimCLR", "generate_permutations",
           "hamming_stats", "load_permutations"]
