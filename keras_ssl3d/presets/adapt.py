"""Input-channel adaptation: use an encoder pretrained on c1 channels with c2 channels.

The paper pretrains on UK Biobank (T1 + FLAIR, 2 channels) and fine-tunes on BraTS (4 channels)
by duplicating the weights of the input layer only; everything after it is copied unchanged.

The weights that see the input channels are found generically: the model is rebuilt from its
config with the new channel count, and the weights whose shapes differ only in the input-channel
axis (-2 of a conv kernel) are the input layer's (``level1_block1`` conv1 and shortcut kernels for
`Encoder3D`, ``stem_conv`` for `Encoder2D`). Strategies, for an input kernel ``W`` with source
channels ``W_1..W_c1``:

- ``duplicate``: new channel ``j`` gets ``W_(j mod c1) / n_i`` where ``n_i`` is how many new
  channels copy source channel ``i``. An input whose channels repeat the original ones
  (``[x1, x2, x1, x2]``) then gives exactly the original activations (``n_i = c2 / c1`` when c2
  is a multiple of c1, i.e. the familiar ``c1 / c2`` scaling).
- ``mean``: every new channel gets ``mean_i(W_i) * c1 / c2``: an input with the same image in
  every channel gives the activations the source model gives it in every channel.
- ``random``: the input kernels keep the fresh initialisation of the rebuilt model.
- ``by_name``: new channels whose name matches a source channel name (case-insensitive) copy
  it; the others get ``mean_i(W_i)``; the result is scaled by ``c1 / c2`` (a pure reordering of
  the same channels is copied exactly). Needs the source model's ``channel_names``.
"""

import keras
import numpy as np

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import CHANNEL_ADAPTATIONS as STRATEGIES  # noqa: E402


def adapt_input_channels(model, in_channels=None, channels=None, strategy="duplicate"):
    """Return a new model like ``model`` but taking ``in_channels`` (or the named ``channels``).

    Works for encoders (``Encoder3D``, ``Encoder2D``) and models holding one (``Segmenter3D``,
    ``Classifier2D``). Returns ``model`` itself when nothing changes.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown channel adaptation strategy {strategy!r}; choose one of {STRATEGIES}")
    if channels is not None:
        if isinstance(channels, str):
            raise ConfigError(f"channels must be a list of names, got the string {channels!r}")
        channels = [str(c) for c in channels]
        if not channels:
            raise ConfigError("channels must name at least one channel")
        if len(set(c.lower() for c in channels)) != len(channels):
            raise ConfigError(f"channel names must be unique, got {channels}")
        if in_channels is not None and int(in_channels) != len(channels):
            raise ConfigError(f"in_channels={in_channels} but {len(channels)} channel names given: {channels}")
        in_channels = len(channels)
    if in_channels is None:
        raise ConfigError("give in_channels or channels to adapt the input layer")
    if isinstance(in_channels, bool) or int(in_channels) != in_channels or int(in_channels) < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    in_channels = int(in_channels)

    config = model.get_config()
    encoder_config = _encoder_config(config)
    source_channels = int(encoder_config["in_channels"])
    source_names = encoder_config.get("channel_names")
    target_names = channels if channels is not None else (source_names if in_channels == source_channels else None)
    if in_channels == source_channels and (channels is None or _same_names(channels, source_names)):
        return model
    if strategy == "by_name":
        if not source_names:
            raise ConfigError("strategy 'by_name' needs a model with channel_names (this preset has none); "
                              "use 'duplicate' or 'mean'")
        if channels is None:
            raise ConfigError("strategy 'by_name' needs the target channel names (channels=[...])")
        known = {n.lower() for n in source_names}
        if not any(c.lower() in known for c in channels):
            raise ConfigError(f"none of the channels {channels} is known to the model; it was trained on "
                              f"{source_names}")

    encoder_config["in_channels"] = in_channels
    encoder_config["channel_names"] = target_names
    new_model = type(model).from_config(config)

    input_paths = _input_weight_paths(model, new_model, source_channels, in_channels)
    old_by_path = {w.path: w for w in model.weights}
    for new_w in new_model.weights:
        old_w = old_by_path.get(new_w.path)
        if old_w is None or (new_w.path not in input_paths and tuple(old_w.shape) != tuple(new_w.shape)):
            raise ConfigError(_structure_message(model, in_channels))
        old = keras.ops.convert_to_numpy(old_w)
        if new_w.path in input_paths:
            new = keras.ops.convert_to_numpy(new_w)
            old = _adapt_kernel(old, new, strategy, source_names, target_names).astype(new.dtype)
        new_w.assign(old)
    if len(old_by_path) != len(new_model.weights):
        raise ConfigError(_structure_message(model, in_channels))
    return new_model


def _same_names(a, b):
    return b is not None and [x.lower() for x in a] == [x.lower() for x in b]


def _encoder_config(config):
    """The (mutable) config dict that holds ``in_channels``: the model's own or its encoder's."""
    if "in_channels" in config:
        return config
    encoder = config.get("encoder")
    if isinstance(encoder, dict):
        inner = encoder.get("config", encoder)
        if "in_channels" in inner:
            return inner
    raise ConfigError(f"cannot adapt input channels of a model without an in_channels setting: {config.get('name')}")


def _structure_message(model, in_channels):
    return (f"cannot adapt {type(model).__name__} to {in_channels} channels: the rebuilt model's weights differ "
            "beyond the input layer (its structure depends on the number of input channels)")


def _input_weight_paths(old_model, new_model, c1, c2):
    """Paths of the weights whose input-channel axis (-2) depends on the number of channels."""
    old_shapes = {w.path: tuple(w.shape) for w in old_model.weights}
    if c1 == c2:
        # Same count (only names change): find the input weights with a probe of another width.
        for probe in (c1 + 1, c1 + 2):  # one of them keeps the block structure (shortcut conv or not)
            config = old_model.get_config()
            _encoder_config(config)["in_channels"] = probe
            _encoder_config(config)["channel_names"] = None
            new_model = type(old_model).from_config(config)
            if len(new_model.weights) == len(old_shapes):
                break
    return {w.path for w in new_model.weights
            if w.path in old_shapes and _differs_in_channels(old_shapes[w.path], tuple(w.shape))}


def _differs_in_channels(a, b):
    return a != b and len(a) == len(b) and len(a) >= 2 and a[:-2] == b[:-2] and a[-1] == b[-1]


def _adapt_kernel(old, new, strategy, source_names, target_names):
    c1, c2 = old.shape[-2], new.shape[-2]
    if strategy == "random":
        return new
    if strategy == "mean":
        mean = old.mean(axis=-2, keepdims=True)
        return np.repeat(mean, c2, axis=-2) * (c1 / c2)
    if strategy == "duplicate":
        source = np.arange(c2) % c1
        copies = np.bincount(source, minlength=c1)
        return old[..., source, :] / copies[source][:, None]
    # by_name
    index = {n.lower(): i for i, n in enumerate(source_names)}
    mean = old.mean(axis=-2)
    slices = [old[..., index[n.lower()], :] if n.lower() in index else mean for n in target_names]
    return np.stack(slices, axis=-2) * (c1 / c2)

