"""keras-ssl3d's own folder on this machine (caches, local zoo builds); no Keras, no other module."""

import os
from pathlib import Path

HOME_ENV = "KERAS_SSL3D_HOME"


def home_dir():
    """keras-ssl3d's own cache: ``$KERAS_SSL3D_HOME`` or ``~/.cache/keras_ssl3d``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "keras_ssl3d"
