"""User-facing errors.

Everything that is the user's fault (a bad file, a bad handle, a bad option) raises a subclass of
`SSL3DError`. Its message is one line that names the file and the problem; the CLI prints it as
``Error: <message>`` and exits with status 2, never with a stack trace.
"""


class SSL3DError(Exception):
    """Base class of all errors meant to be read by a user."""

    exit_code = 2

    def __init__(self, message, path=None):
        self.path = None if path is None else str(path)
        text = f"{self.path}: {message}" if self.path else str(message)
        super().__init__(text)


class DataError(SSL3DError, ValueError):
    """An input file or data set is unreadable or inconsistent."""


class PresetError(SSL3DError, ValueError):
    """A preset (handle, folder, weights file, hub repo) cannot be resolved or verified."""


class ConfigError(SSL3DError, ValueError):
    """An option, shape or argument combination is invalid."""


class RunError(SSL3DError, RuntimeError):
    """A training run cannot be started, resumed or saved."""


class OutputError(ConfigError):
    """An output path would replace, delete or overwrite something the package did not write."""


class DataWarning(UserWarning):
    """Something in the data a user must hear about although the run goes on (printed as one line)."""


def warn_data(message, path=None):
    """Warn about the data in one line, ``Warning: <path>: <message>`` (a warning, so the API can filter it)."""
    import warnings

    warnings.warn(DataWarning(f"{path}: {message}" if path is not None else str(message)), stacklevel=2)


def _format_warning(message, category, filename, lineno, line=None, _default=None):
    if issubclass(category, DataWarning):
        return f"Warning: {message}\n"
    return _default(message, category, filename, lineno, line)


def _install_one_line_format():
    import functools
    import warnings

    if not getattr(warnings.formatwarning, "_keras_ssl3d", False):
        fmt = functools.partial(_format_warning, _default=warnings.formatwarning)
        fmt._keras_ssl3d = True
        warnings.formatwarning = fmt


_install_one_line_format()
