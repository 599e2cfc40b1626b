"""Parsing of comma-separated CLI values (kept free of Keras so ``--help`` stays fast)."""

from keras_ssl3d.errors import ConfigError


def parse_int_list(text, option):
    """``"32,64,128"`` -> ``(32, 64, 128)``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option} must be comma-separated positive integers, got {text!r}")
    return values


def parse_float_list(text, option, low=0.0, high=1.0):
    """``"0.05,0.1,1"`` -> ``(0.05, 0.1, 1.0)``, each in ``(low, high]``."""
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not low < v <= high for v in values):
        raise ConfigError(f"{option} values must lie in ({low:g}, {high:g}], got {text!r}")
    return values


def parse_name_list(text, option):
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise ConfigError(f"{option} must name at least one item")
    return values
