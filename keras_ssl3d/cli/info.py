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
    info.update(_devices())
    return info


def _devices():
    """The devices a strategy would use here, and what ``--distribute auto`` picks."""
    from keras_ssl3d import distribute
    from keras_ssl3d.errors import SSL3DError

    accelerators, cpus = distribute.local_devices()
    rows = {"accelerators": ", ".join(accelerators) or "none", "cpu devices": ", ".join(cpus)}
    try:
        plan = distribute.plan("auto")
        rows["distribute auto"] = (f"{plan.kind} over {plan.replicas} devices ({', '.join(plan.devices)})"
                                   if plan.replicas > 1 else "none (one device)")
    except SSL3DError as e:
        rows["distribute auto"] = str(e)
    return rows


@click.command()
def info():
    """Show the Keras backend, library versions and devices."""
    for key, value in collect_info().items():
        click.echo(f"{key:16s} {value}")
