"""The model a fine-tuning run trains: the encoder (a preset, a run folder, or none for scratch) adapted to the
data's channels, with a U-Net decoder (3D) or a grading head (2D); a restoration task's pretrained decoder is kept
unless ``decoder="fresh"``."""

from pathlib import Path

from keras_ssl3d.errors import ConfigError, PresetError
from keras_ssl3d.names import FILTERS_3D as PAPER_FILTERS_3D

MODEL_DIR = "model"  # a fine-tuning run's saved model: RUN/model/ (a preset folder)


def load_encoder(handle, rank):
    """An encoder from a preset handle, a ``.keras`` file, or a run folder holding one.

    Accepts encoders and models that contain one (a ``Segmenter3D``, a pretext task model with
    ``.encoder``).
    """
    return _encoder_of(load_pretrained_model(handle), rank, handle)


def _encoder_of(model, rank, handle):
    encoder = getattr(model, "encoder", model)
    if getattr(encoder, "rank", None) != rank:
        raise PresetError(f"holds a {type(encoder).__name__} (rank {getattr(encoder, 'rank', '?')}), "
                          f"need a {rank}D encoder", path=handle)
    return encoder


def load_pretrained_model(handle):
    """The model a preset handle, ``.keras`` file or run folder (its ``encoder/`` or ``model/``) holds."""
    from keras_ssl3d.presets import load_keras_file, load_preset, resolve_handle

    path = Path(str(handle)).expanduser()
    if path.is_dir() and not (path / "metadata.json").is_file():
        for sub in ("encoder", MODEL_DIR):
            if (path / sub / "metadata.json").is_file():
                handle = str(path / sub)
                break
    resolved = resolve_handle(str(handle))
    if resolved.kind == "keras_file":
        model = load_keras_file(resolved.path)
    else:
        model = load_preset(resolved.path, expected_sha256=resolved.expected_sha256)
    return model


def adapt_encoder(encoder, channel_names, adapt="auto"):
    """Match the encoder's input layer to the data's channels (see `adapt_input_channels`)."""
    from keras_ssl3d.presets.adapt import adapt_input_channels

    names = getattr(encoder, "channel_names", None)
    if adapt == "auto":
        known = {n.lower() for n in names or []}
        adapt = "by_name" if known and any(c.lower() in known for c in channel_names) else "duplicate"
    if names is None and encoder.in_channels == len(channel_names):
        return encoder, "none"
    adapted = adapt_input_channels(encoder, channels=channel_names, strategy=adapt)
    return adapted, ("none" if adapted is encoder else adapt)


def build_model(data, encoder_handle, filters=None, norm="batch", adapt="auto", dropout=0.0, decoder="auto"):
    """Task model for ``data`` on a pretrained (or, with ``"none"``, a fresh) encoder.

    Returns ``(model, channel adaptation, decoder)``; ``decoder`` is ``"pretrained"`` when the
    preset holds a whole U-Net (Genesis / MAE pretraining) and ``decoder="auto"``: its decoder starts the
    segmenter's, under a fresh output layer. Otherwise it is ``"fresh"`` (with ``decoder="fresh"`` a new
    decoder of the preset's architecture on its encoder), or ``None`` for 2D classifiers.
    """
    from keras_ssl3d.models import Classifier2D, Encoder2D, Encoder3D, Segmenter3D

    channels = len(data.channel_names)
    adapted = "none"
    if data.task == "segmentation":
        pretrained = None
        if str(encoder_handle).lower() == "none":
            encoder = Encoder3D(in_channels=channels, filters=tuple(filters or PAPER_FILTERS_3D), norm=norm,
                                channel_names=data.channel_names)
        else:
            pretrained = load_pretrained_model(encoder_handle)
            encoder, adapted = adapt_encoder(_encoder_of(pretrained, 3, encoder_handle), data.channel_names, adapt)
        divisor = encoder.size_divisor
        if data.size % divisor:
            raise ConfigError(f"--size {data.size} must be a multiple of {divisor} for a {len(encoder.filters)}-level "
                              "U-Net (or use fewer --filters levels)")
        if isinstance(pretrained, Segmenter3D) and decoder == "fresh":  # the preset's architecture, new weights
            return Segmenter3D(encoder, num_classes=data.num_classes, decoder_filters=pretrained.decoder_filters,
                               norm=pretrained.decoder_norm, upsample=pretrained.upsample), adapted, "fresh"
        if isinstance(pretrained, Segmenter3D):  # decoder weights do not depend on the input channels
            return pretrained.with_head(data.num_classes, encoder=encoder), adapted, "pretrained"
        return Segmenter3D(encoder, num_classes=data.num_classes), adapted, "fresh"
    if str(encoder_handle).lower() == "none":
        kwargs = {"blocks": tuple(filters)} if filters else {}
        encoder = Encoder2D(in_channels=channels, channel_names=data.channel_names, **kwargs)
    else:
        encoder, adapted = adapt_encoder(load_encoder(encoder_handle, 2), data.channel_names, adapt)
    return Classifier2D(encoder, num_classes=data.num_classes, dropout=dropout), adapted, None
