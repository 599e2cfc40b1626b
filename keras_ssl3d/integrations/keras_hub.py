"""keras-hub support: ``keras_hub.models.Backbone.from_preset(our_preset)`` returns a working model.

keras-hub finds a preset's class by the ``registered_name`` in ``config.json`` (``keras_ssl3d>Encoder3D``)
and refuses it unless it subclasses ``keras_hub.models.Backbone``. Importing this module re-registers each
of our preset classes under its own name as a twin that also subclasses ``Backbone``; the twin keeps the
class name, config and weights layout, so existing presets (zoo, hub, local) load through keras-hub
unchanged and a preset saved from a twin loads without keras-hub as the plain class.
Import it explicitly (``import keras_ssl3d.integrations.keras_hub``): a plain ``keras.saving.load_model``
then returns the twins too, so it is not done behind the user's back; keras-hub is never a dependency.
Our own loaders (``from_pretrained``) keep returning the plain classes (presets/io.py).
"""

import keras
import keras_hub

from keras_ssl3d.models import PRESET_CLASSES


def _backbone_twin(cls):
    """``cls`` and ``keras_hub.models.Backbone`` in one class, with ``cls``'s name."""

    def save_to_preset(self, preset_dir, max_shard_size=None):
        """Write our preset format (keras-hub's files plus metadata.json with the weights' sha256)."""
        return self.save_pretrained(preset_dir)

    return type(cls.__name__, (cls, keras_hub.models.Backbone), {
        "__module__": __name__,
        "__doc__": f"{cls.__name__} as a keras-hub Backbone (see keras_ssl3d.integrations.keras_hub).",
        "save_to_preset": save_to_preset,
        "_backbone_twin": True,  # presets/io.py keeps rebuilding the plain class for our own loaders
    })


BACKBONES = {cls: _backbone_twin(cls) for cls in PRESET_CLASSES}


def _register(classes):
    for cls in classes:
        keras.saving.register_keras_serializable(package="keras_ssl3d", name=cls.__name__)(cls)


def register():
    """Our registered names resolve to the Backbone twins (done on import)."""
    _register(BACKBONES.values())


def unregister():
    """Our registered names resolve to the plain classes again."""
    _register(BACKBONES)


register()
