"""``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for encoders and task models."""

from keras_ssl3d.errors import ConfigError, PresetError


class PretrainedMixin:
    """Adds the preset API to a Keras model class."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_backbone_twin"):  # keras-hub twins (integrations/keras_hub.py) are not ours
            from keras_ssl3d.presets.io import register_model_class

            register_model_class(cls)

    @classmethod
    def from_pretrained(cls, handle, *, in_channels=None, channels=None, adapt="duplicate", revision=None,
                        cache_dir=None, local_files_only=None, token=None):
        """Load a pretrained model.

        ``handle`` is a local preset folder, a ``.keras`` file, a zoo name (``"brats-cpc"``) or a
        Hugging Face Hub repo (``"hf://org/name"``, ``"org/name"``, optionally ``@revision``).
        ``in_channels`` / ``channels`` adapt the first layer to another number (or list of named)
        input channels with the ``adapt`` strategy (``duplicate``, ``mean``, ``random``,
        ``by_name``); everything after the first layer is copied unchanged.
        """
        return load_pretrained(handle, cls=cls, in_channels=in_channels, channels=channels, adapt=adapt,
                               revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                               token=token)

    def save_pretrained(self, directory, metadata=None, input_contract=None):
        """Write this model as a preset folder (config.json, model.weights.h5, metadata.json).

        ``directory`` must be new, empty or an earlier preset (replaced); a folder holding anything
        else is refused with an `OutputError`, so a user's files are never deleted.
        """
        from keras_ssl3d.presets.io import save_preset

        return save_preset(self, directory, metadata=metadata, input_contract_extra=input_contract)

    def push_to_hub(self, repo_id, *, token=None, private=False, revision=None, metadata=None,
                    commit_message=None):
        """Save this model as a preset and upload it to the Hugging Face Hub (see ``keras_ssl3d.zoo``)."""
        try:
            from keras_ssl3d.presets.publish import push_model
        except ImportError:
            raise PresetError("hub publishing is not available in this installation") from None
        return push_model(self, repo_id, token=token, private=private, revision=revision, metadata=metadata,
                          commit_message=commit_message)


def load_pretrained(handle, cls=None, *, in_channels=None, channels=None, adapt="duplicate", revision=None,
                    cache_dir=None, local_files_only=None, token=None):
    """The model a handle holds, its input layer adapted on request.

    With ``cls``, the model must be one, or hold one as ``.encoder`` (``Encoder3D.from_pretrained``
    on a Genesis / MAE U-Net preset returns its encoder).
    """
    from keras_ssl3d.presets.io import load_keras_file, load_preset
    from keras_ssl3d.presets.resolve import resolve_handle

    resolved = resolve_handle(handle, revision=revision, cache_dir=cache_dir,
                              local_files_only=local_files_only, token=token)
    if resolved.kind == "keras_file":
        model = load_keras_file(resolved.path)
    else:
        model = load_preset(resolved.path, expected_sha256=resolved.expected_sha256)
    if cls is not None and not isinstance(model, cls):
        if not isinstance(getattr(model, "encoder", None), cls):  # a U-Net preset gives its encoder
            raise PresetError(f"holds a {type(model).__name__}, not a {cls.__name__}", path=resolved.path)
        model = model.encoder
    if in_channels is not None or channels is not None:
        model = _adapt(model, in_channels, channels, adapt)
    return model


def _adapt(model, in_channels, channels, adapt):
    if channels is not None:
        channels = [str(c) for c in channels]
        if in_channels is not None and in_channels != len(channels):
            raise ConfigError(f"in_channels={in_channels} but {len(channels)} channel names given")
        in_channels = len(channels)
    try:
        from keras_ssl3d.presets.adapt import adapt_input_channels
    except ImportError:
        if in_channels == getattr(model, "in_channels", None):
            return model
        raise ConfigError("input-channel adaptation is not available in this installation") from None
    return adapt_input_channels(model, in_channels=in_channels, channels=channels, strategy=adapt)
