"""A frozen-encoder probe: what a pretext taught, measured without fine-tuning the encoder.

The encoder is frozen (``trainable=False``: its batch norm runs in inference mode with its own moving
statistics) and a light head is trained on its features: a 1x1x1 convolution per level of
``encoder.feature_extractor()``, each upsampled (nearest) to the input size, summed, then softmax
(`ProbeHead`). Only the head learns, so the score says how linearly the encoder's features already
separate the labels: a cheap, low-variance diagnostic for choosing tasks and settings, reported beside
the same probe on a randomly initialised encoder of the same architecture (and, where given, on the
encoder of a scratch-trained fine-tuning run). Not the package's promise: that is fine-tuning.

Subjects follow the rules of ``finetune``/``study`` (`keras_ssl3d.finetune.runner`): ``split_seed``
holds out ``test_fraction`` of the subjects, then ``val_fraction`` of the rest; the head trains on the
``label_fraction`` subset (by ``seed``) of what is left, and is scored (Dice) on the test subjects, or on
the validation subjects when there is no test split. The head keeps its last epoch (no selection).
"""

import dataclasses
import json
from pathlib import Path

import keras

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.fileio import OutputKind, claim_output_dir, write_json_atomic

PROBE_FILE = "probe.json"
PROBE_OUTPUT = OutputKind("probe", frozenset((PROBE_FILE,)), lambda folder: (Path(folder) / PROBE_FILE).is_file())
RANDOM = "random"
FRESH = ("none", RANDOM)
NO_HELD_OUT = "the probe is scored on held-out subjects: set --test-fraction or --val-fraction > 0"


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class ProbeHead(keras.layers.Layer):
    """``[level features] -> class probabilities at the first level's size``.

    Level ``i`` (0-based) is ``2**i`` times smaller than the first (the encoder's max-poolings); its
    1x1x1 convolution is upsampled by ``2**i`` (nearest) and the levels' logits are summed.
    """

    def __init__(self, num_classes, num_levels, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_levels = int(num_levels)
        if self.num_classes < 1 or self.num_levels < 1:
            raise ConfigError(f"ProbeHead needs num_classes >= 1 and num_levels >= 1, got {num_classes}, {num_levels}")
        self.convs = [keras.layers.Conv3D(self.num_classes, 1, name=f"level{i + 1}_logits")
                      for i in range(self.num_levels)]
        self.ups = [keras.layers.UpSampling3D(2 ** i, name=f"level{i + 1}_up") if i else None
                    for i in range(self.num_levels)]

    def build(self, input_shape):
        if len(input_shape) != self.num_levels:
            raise ValueError(f"ProbeHead expects {self.num_levels} feature levels, got {len(input_shape)}")
        for conv, shape in zip(self.convs, input_shape):
            conv.build(shape)

    def call(self, features):
        total = None
        for conv, up, x in zip(self.convs, self.ups, features):
            logits = conv(x)
            logits = logits if up is None else up(logits)
            total = logits if total is None else total + logits
        return keras.ops.softmax(keras.ops.cast(total, "float32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_levels=self.num_levels)
        return config


def probe_model(encoder, num_classes):
    """The frozen ``encoder`` + a fresh `ProbeHead`; ``model.in_channels``/``num_classes`` as evaluation reads them."""
    encoder.trainable = False  # Keras 3: batch norm of a non-trainable layer runs in inference mode
    inputs = keras.Input(shape=encoder.input_shape[1:], name="volume")
    features = encoder.feature_extractor()(inputs)
    outputs = ProbeHead(num_classes, len(features), name="probe_head", dtype="float32")(features)
    model = keras.Model(inputs, outputs, name="probe")
    model.in_channels = encoder.in_channels
    model.num_classes = int(num_classes)
    return model


def random_like(encoder, seed=0):
    """An encoder of ``encoder``'s architecture (its config) with fresh weights (``seed`` fixed)."""
    keras.utils.set_random_seed(int(seed))
    config = dict(encoder.get_config(), trainable=True)
    return type(encoder).from_config(config)


@dataclasses.dataclass
class ProbeSettings:
    label_fraction: float = 1.0
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-3  # only the head trains: a linear model takes a larger step than fine-tuning's 1e-5
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    loss: str = "dice_ce"
    # as finetune's --steps-per-epoch: an epoch is as many whole shuffled passes over the labelled subjects as
    # give about this many steps (None: one pass). Fewer, longer epochs pay Keras' per-epoch cost less often.
    steps_per_epoch: int | None = None

    def check(self):
        """Refuse, before any data is read, a probe with no held-out subjects to score on."""
        if not self.test_fraction and not self.val_fraction:
            raise ConfigError(NO_HELD_OUT)


def probe_subjects(n, s):
    """``(train, scored, "test"|"validation")`` subject indices, by the rules of finetune/study."""
    from keras_ssl3d.data.splits import label_subset, split_indices, split_test

    rest, test = split_test(n, s.test_fraction, s.split_seed)
    pool, val = split_indices(len(rest), s.val_fraction, s.split_seed)
    train = label_subset(rest[pool], s.label_fraction, s.seed)
    if len(test):
        return train, test, "test"
    if len(rest[val]):
        return train, rest[val], "validation"
    raise ConfigError(NO_HELD_OUT)


def run_probe(data, encoder, settings, name="encoder"):
    """Train a probe head on the frozen ``encoder`` and score it; returns a result dict (mean Dice ...)."""
    from keras_ssl3d.data.pipeline import VolumeBatches
    from keras_ssl3d.finetune.evaluation import evaluate_model
    from keras_ssl3d.finetune.runner import _subject_id, epoch_indices
    from keras_ssl3d.losses import get_segmentation_loss

    if data.task != "segmentation":
        raise ConfigError("the probe needs 3D segmentation data (volumes with label maps)")
    if data.size % encoder.size_divisor:
        raise ConfigError(f"--size {data.size} must be a multiple of {encoder.size_divisor} for a "
                          f"{len(encoder.filters)}-level encoder")
    train, scored, subset = probe_subjects(len(data), settings)
    keras.utils.set_random_seed(int(settings.seed))
    model = probe_model(encoder, data.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(settings.lr), loss=get_segmentation_loss(settings.loss))
    model.optimizer.build(model.trainable_variables)  # not inside the first traced step: one trace, not two
    epoch = epoch_indices(train, settings.steps_per_epoch, settings.batch_size)  # whole passes, as finetune's
    batches = VolumeBatches(data.samples, batch_size=settings.batch_size, shuffle=True, seed=settings.seed,
                            with_labels=True, indices=epoch)
    history = model.fit(batches, epochs=settings.epochs, verbose=0, shuffle=False)
    scored_ids = [_subject_id(data, i) for i in scored]
    metadata = {"task": "segmentation", "num_classes": data.num_classes, "class_names": data.class_names,
                "label_mapping": None if data.label_mapping is None else
                {str(k): v for k, v in data.label_mapping.items()},
                "input_size": [data.size] * 3, f"{subset}_subjects": scored_ids}
    scores = evaluate_model(model, metadata, data, subjects=subset)
    return {"name": name, "mean_dice": scores["mean_dice"], "scored_on": subset, "scored_size": int(len(scored)),
            "train_size": int(len(train)), "epochs": settings.epochs, "steps_per_epoch": settings.steps_per_epoch,
            "final_loss": float(history.history["loss"][-1]),
            "per_class": scores.get("per_class"), "regions": scores.get("regions"),
            "train_subjects": [_subject_id(data, i) for i in train], "scored_subjects": scored_ids}


def load_probe_encoder(handle, data, filters=None, norm="batch", adapt="auto", seed=0):
    """The encoder to probe: a preset/run's encoder (or one loaded already; its input adapted to the data's channels as finetune
    does), or with ``none``/``random`` a fresh one from ``filters``/``norm`` (initialised by ``seed``)."""
    from keras_ssl3d.models import Encoder3D
    from keras_ssl3d.finetune.model import adapt_encoder, load_encoder
    from keras_ssl3d.names import FILTERS_3D as PAPER_FILTERS_3D

    if isinstance(handle, str) and handle.lower() in FRESH:
        keras.utils.set_random_seed(int(seed))
        return Encoder3D(in_channels=len(data.channel_names), filters=tuple(filters or PAPER_FILTERS_3D), norm=norm,
                         channel_names=data.channel_names)
    encoder = handle if isinstance(handle, keras.Model) else load_encoder(handle, 3)
    return adapt_encoder(encoder, data.channel_names, adapt)[0]


def write_probe(out, results, settings):
    """``OUT/probe.json``: every probe's result and the settings (written atomically)."""
    claim_output_dir(out, PROBE_OUTPUT, option="--out")
    write_json_atomic(Path(out) / PROBE_FILE, {"settings": dataclasses.asdict(settings), "probes": results})


def score_line(result):
    """``probe exemplar: test mean Dice 0.6123 (4 test subjects; head trained on 3 for 20 epochs)``."""
    return (f"probe {result['name']}: {result['scored_on']} mean Dice {result['mean_dice']:.4f} "
            f"({result['scored_size']} {result['scored_on']} subjects; head trained on {result['train_size']} "
            f"for {result['epochs']} epochs)")


def read_probe(out):
    return json.loads((Path(out) / PROBE_FILE).read_text(encoding="utf-8"))

