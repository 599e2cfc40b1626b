"""Start Keras (and its backend) for a CLI command, quietly.

TensorFlow prints start-up lines from C++ (``port.cc``, ``cudart_stub.cc``, ``cuInit`` ...) before its
logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; they go straight to file descriptor 2.
A command that needs Keras therefore imports it once here, with TF's level set to 3 and fd 2 captured,
and passes on every captured line that is not such a native log line (Python warnings stay visible).
``keras-ssl3d --verbose`` or a ``TF_CPP_MIN_LOG_LEVEL`` the user set to 0 keeps everything.
"""

import functools
import os
import sys

from keras_ssl3d.native_logs import native_logs_filtered, native_logs_wanted

def quiet_wanted(verbose=False):
    """Quiet unless --verbose, or the user asked TensorFlow for its logs with TF_CPP_MIN_LOG_LEVEL=0."""
    return not verbose and not native_logs_wanted()


def start_keras(verbose=False):
    """Import Keras, its backend and every keras_ssl3d layer (idempotent; quiet unless asked)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras_ssl3d

    if "keras" in sys.modules:
        keras_ssl3d.import_all()
        return
    if not quiet_wanted(verbose):
        _import_backend(keras_ssl3d)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_logs_filtered():
        _import_backend(keras_ssl3d)
    if "tensorflow" in sys.modules:  # TF's Python-side notices (retracing, ...) go through absl
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


def _import_backend(keras_ssl3d):
    """``import_all()``; an unknown or missing backend (KERAS_BACKEND=foo) is a one-line ConfigError."""
    from keras_ssl3d.errors import ConfigError

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        keras_ssl3d.import_all()
    except ValueError as e:  # Keras: "Unable to import backend : foo"
        if "Unable to import backend" not in str(e):
            raise
        raise ConfigError(f"KERAS_BACKEND={backend}: not a Keras backend; use tensorflow, jax or torch") from None
    except ImportError as e:
        if (e.name or "").split(".")[0] != backend:
            raise
        raise ConfigError(f"KERAS_BACKEND={backend}: {backend} is not installed ({e}); install it or use "
                          "another backend") from None


def light(command_callback):
    """Mark a command that runs without Keras (``zoo list``): the CLI will not start Keras for it."""
    command_callback.light = True
    return command_callback


def needs_keras(command):
    """Make ``command`` (and a group's subcommands) start Keras before running, unless marked light."""
    import click

    if isinstance(command, click.Group):
        for sub in command.commands.values():
            needs_keras(sub)
        return command
    callback = command.callback
    if callback is None or getattr(callback, "light", False) or getattr(callback, "starts_keras", False):
        return command

    @functools.wraps(callback)
    def run(*args, **kwargs):
        ctx = click.get_current_context(silent=True)
        verbose = bool(ctx and ctx.find_root().params.get("verbose"))
        start_keras(verbose)
        return callback(*args, **kwargs)

    run.starts_keras = True
    command.callback = run
    return command


def check_size(filters, size, batch=1):
    """Refuse a 3D encoder that cannot fit this machine's memory, and warn before a huge --size is cached."""
    import click

    from keras_ssl3d.training.budget import cache_warning, check_encoder_fits

    if filters:
        check_encoder_fits(filters, size, batch)
    warning = cache_warning(size)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
