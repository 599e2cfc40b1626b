"""``keras-ssl3d info``: what this installation runs on."""

import platform

import click


def collect_info():
    import keras

    from keras_ssl3d.version import __version__

    info = {
        "keras-ssl3d": __version__,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    for module in ("tensorflow", "jax", "torch", "numpy", "nibabel", "huggingface_hub", "click"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            info[module] = "not installed"
    info["devices"] = ", ".join(_devices(info["backend"]))
    return info


def _devices(backend):
    try:
        from keras import distribution

        return distribution.list_devices()
    except Exception:
        return [f"cpu ({backend})"]


@click.command()
def info():
    """Show the Keras backend, library versions and devices."""
    for key, value in collect_info().items():
        click.echo(f"{key:16s} {value}")
