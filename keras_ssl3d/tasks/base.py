"""What the pretext task models share: compile defaults, the encoder, patch embedding, data."""

import keras
import numpy as np
from keras import ops

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import PRETEXT_INPUT_SIZE as DEFAULT_INPUT_SIZE
from keras_ssl3d.names import PRETEXT_LEARNING_RATE as DEFAULT_LEARNING_RATE  # Adam, the paper's appendix



def pretext_summary(rows, chance_loss, chance_accuracy):
    """What a pretext task learned, from its per-epoch history rows: the last held-out accuracy (or, for
    restoration tasks, the held-out loss of the first and last epoch) next to the task's chance level."""
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    return {"chance_loss": chance_loss, "chance_accuracy": chance_accuracy,
            "train_accuracy": last.get("accuracy"), "held_out_accuracy": last.get("val_accuracy"),
            "held_out_loss_first": first.get("val_loss"), "held_out_loss": last.get("val_loss"),
            "epochs": len(rows)}

def check_encoder(encoder, task):
    if isinstance(encoder, dict):
        encoder = keras.saving.deserialize_keras_object(encoder)
    if getattr(encoder, "rank", None) not in (2, 3):
        raise ConfigError(f"{task} needs a keras_ssl3d Encoder3D or Encoder2D (with .rank 3 or 2), "
                          f"got {type(encoder).__name__}")
    return encoder


def spatial_size(input_size, rank):
    if input_size is None:
        input_size = DEFAULT_INPUT_SIZE[rank]
    if np.isscalar(input_size):
        return (int(input_size),) * rank
    size = tuple(int(s) for s in input_size)
    if len(size) != rank:
        raise ConfigError(f"input_size needs {rank} values for a {rank}D encoder, got {size}")
    return size


def patch_geometry(encoder, input_size, grid, jitter, task):
    """Patch size of a task's jittered grid, checked against the encoder's down-sampling.

    A patch smaller than the encoder's smallest input would pool away to nothing
    (a deep Keras shape error); say which settings to change instead.
    """
    from keras_ssl3d.tasks.patches import grid_geometry

    size = spatial_size(input_size, encoder.rank)
    try:
        _, patch = grid_geometry(size, grid, jitter)
    except ValueError as e:
        raise ConfigError(f"{task}: {e}") from None
    minimum = getattr(encoder, "min_input_size", 1)
    if min(patch) < minimum:
        raise ConfigError(
            f"{task}: a grid of {grid} with jitter {jitter} cuts {'x'.join(map(str, size))} inputs into "
            f"{'x'.join(map(str, patch))} patches, smaller than the encoder's smallest input ({minimum}); "
            "use a larger input size, a smaller grid, or an encoder with fewer levels"
        )
    return size, patch


def unet_for(encoder, activation, task):
    """A ``Segmenter3D`` on ``encoder`` that outputs one channel per input channel (restoration tasks).

    Its decoder is pretrained with the encoder; pretraining saves this U-Net as the preset.
    """
    from keras_ssl3d.models.segmenter3d import Segmenter3D

    if encoder.rank != 3:
        raise ConfigError(f"{task} needs a 3D encoder (its U-Net decoder is 3D), got a {encoder.rank}D one")
    return Segmenter3D(encoder, num_classes=encoder.in_channels, activation=activation, name="unet")


def global_pool(features):
    """Global average pooling of an encoder's feature map (a no-op on pooled vectors)."""
    rank = len(features.shape) - 2
    if rank == 3:
        return keras.layers.GlobalAveragePooling3D()(features)
    if rank == 2:
        return keras.layers.GlobalAveragePooling2D()(features)
    return features


def embed_patches(encoder, patches, embedding_dim, name="patch_embedding"):
    """``(N, P, *patch, C) -> (N, P, E)``: all patches of the batch through ONE encoder call.

    The patch axis is folded into the batch axis, so the encoder runs once on ``N * P``
    patches (one big convolution per layer instead of ``P`` small ones), then global pooling
    and a linear projection to ``embedding_dim`` (64 in the paper).
    """
    num_patches = patches.shape[1]
    flat = ops.reshape(patches, (-1, *patches.shape[2:]))
    pooled = global_pool(encoder(flat))
    embeddings = keras.layers.Dense(embedding_dim, name=name)(pooled)
    return ops.reshape(embeddings, (-1, num_patches, embedding_dim))


class PretextTask(keras.Model):
    """Base of the task models (functional ``keras.Model`` subclasses, like keras-hub Tasks).

    ``task.encoder`` is the very encoder object passed in: after ``fit`` it holds the learned
    weights and can be saved with ``task.encoder.save_pretrained(dir)`` and used at any input
    size. ``compile()`` fills in the paper's defaults (Adam, lr 1e-3 in 3D / 5e-4 in 2D, the
    task's loss and pretext accuracy).

    Class attributes that the CLI, the demo and the zoo read (so a new task is one file plus
    its ``TASKS`` entry):
        takes_input_size: the constructor needs ``input_size`` (patch tasks cut a fixed grid).
        min_batch_size: smallest batch the transform accepts (in-batch negatives need 2).
        ranks: encoder ranks the task supports.
        small_hparams: settings for tiny encoders on 16^3-32^3 inputs (the demo, quick tests).
    """

    takes_input_size = False
    min_batch_size = 1
    ranks = (2, 3)
    small_hparams = {}
    # Whether the loss takes negatives from the other samples of the batch (per replica under
    # tf.distribute: see keras_ssl3d.distribute).
    uses_batch_negatives = False

    def _set_encoder(self, encoder):
        self.encoder = encoder

    @property
    def rank(self):
        return self.encoder.rank

    @property
    def encoder_inputs_per_sample(self):
        """How many inputs (volumes, views, patches) one sample gives the encoder in a step: the
        encoder's batch is ``batch_size x`` this (what ``micro_batches`` cuts into parts)."""
        return sum(int(np.prod(x.shape[1:len(x.shape) - self.rank - 1])) for x in self.inputs)

    @property
    def default_learning_rate(self):
        return DEFAULT_LEARNING_RATE[self.rank]

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy()

    def default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def compile(self, optimizer=None, loss=None, metrics=None, learning_rate=None, **kwargs):
        """``keras.Model.compile`` with the task's defaults for anything left out."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate or self.default_learning_rate)
        elif learning_rate is not None:
            raise ConfigError("pass either an optimizer or a learning_rate, not both")
        if loss is None:
            loss = self.default_loss()
        if metrics is None:
            metrics = self.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compile a loaded task exactly as it was saved (Keras skips custom ``compile``s)."""
        config = keras.saving.deserialize_keras_object(config)
        keras.Model.compile(self, **config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def pretrained_model(self):
        """What pretraining saves as the preset: the encoder (tasks that also train a decoder
        return their U-Net, whose ``.encoder`` is this encoder)."""
        return self.encoder

    def transform(self, batch, rng):
        """Turn an unlabeled batch into ``(inputs, targets)`` for this task (numpy)."""
        raise NotImplementedError

    def make_transform(self, seed=None):
        """A ``callable(batch) -> (inputs, targets)`` with its own random stream."""
        rng = np.random.default_rng(seed)

        def transform(batch, rng_override=None):
            return self.transform(np.asarray(batch, dtype=np.float32), rng_override or rng)

        return transform

    # Rotation's 90-degree turns need equal sides (set by the tasks whose transforms do).
    cubic_inputs = False

    def check_inputs(self, shape, source=None, value_range=None):
        """Check samples shaped ``(N, *spatial, C)`` against this task before any training step.

        A mismatch raises a one-line ConfigError saying what to change (instead of a deep Keras
        shape error several calls later); values outside [0, 1] (``value_range=(min, max)``) warn.
        ``source`` (a file or folder) is named in the message.
        """
        shape = tuple(int(n) for n in shape)
        rank, encoder = self.rank, self.encoder
        where = f"{source}: " if source else ""
        layout = "(N, D, H, W, C)" if rank == 3 else "(N, H, W, C)"
        name = type(self).__name__
        if len(shape) != rank + 2:
            raise ConfigError(f"{where}{name} on a {rank}D encoder needs samples shaped {layout}, got shape {shape}")
        if shape[0] < 1:
            raise ConfigError(f"{where}no samples (shape {shape})")
        spatial, channels = shape[1:-1], shape[-1]
        size_text = "x".join(map(str, spatial))
        if channels != encoder.in_channels:
            raise ConfigError(
                f"{where}the samples have {channels} channel(s), the encoder takes {encoder.in_channels}: build it "
                f"with {type(encoder).__name__}(in_channels={channels}, ...) or select {encoder.in_channels} "
                "channel(s) of the samples")
        expected = getattr(self, "input_size", None)
        if expected is not None and tuple(expected) != spatial:
            raise ConfigError(
                f"{where}the samples are {size_text}, {name} was built for {'x'.join(map(str, expected))}: build it "
                f"with {name}(encoder, input_size={spatial[0] if len(set(spatial)) == 1 else spatial}) or resize "
                f"the samples (e.g. load_unlabeled_volumes(..., size={expected[0]}))")
        minimum = getattr(encoder, "min_input_size", 1)
        if min(spatial) < minimum:
            raise ConfigError(f"{where}the samples are {size_text}, smaller than the encoder's smallest input "
                              f"({minimum}); resize them or use an encoder with fewer levels")
        if self.cubic_inputs and len(set(spatial)) != 1:
            raise ConfigError(f"{where}{name} turns samples by 90 degrees, which needs equal sides, got {size_text}; "
                              "resize them to a cube")
        if value_range is not None:
            low, high = (float(v) for v in value_range)
            if low < -1e-3 or high > 1 + 1e-3:
                import warnings

                warnings.warn(f"{where}sample values lie in [{low:g}, {high:g}], not [0, 1] as the encoders were "
                              "trained on; scale them (load_unlabeled_volumes does min-max per channel)",
                              stacklevel=3)

    def chance_accuracy(self, batch_size):
        """The pretext accuracy of a uniform guess (``1 / K`` for a K-class task), None without an accuracy.

        Contrastive tasks override it: their candidates are the batch's other samples or patches.
        """
        if not isinstance(self.default_loss(), keras.losses.SparseCategoricalCrossentropy):
            return None
        return 1.0 / int(self.outputs[0].shape[-1])

    @property
    def chance_loss(self):
        """``ln K``: the cross-entropy of a uniform guess among the task's K classes (None if not a classifier)."""
        if not isinstance(self.default_loss(), keras.losses.SparseCategoricalCrossentropy):
            return None
        return float(np.log(int(self.outputs[0].shape[-1])))

    def dataset(self, samples, batch_size=2, seed=0, shuffle=True, **kwargs):
        """This task's ``(inputs, targets)`` batches from unlabeled ``samples``, for ``fit``.

        ``samples`` is an array ``(N, *spatial, C)``, a ``CachedDataset`` or a cache folder (streamed:
        only the batches in flight are in memory). It is the shared ``VolumeBatches`` pipeline with
        this task's ``transform``: order and randomness are pure functions of ``(seed, epoch, batch)``.
        The last incomplete batch is dropped (contrastive and triplet batches need their negatives).
        Other keyword arguments (``indices``, ``workers``, ...) go to ``VolumeBatches``.
        """
        from keras_ssl3d.data.pipeline import VolumeBatches, as_source

        samples = as_source(samples)
        self.check_inputs((len(samples), *samples.spatial_shape, samples.num_channels),
                          source=getattr(samples, "directory", None), value_range=samples.value_range())
        return VolumeBatches(samples, batch_size=batch_size, seed=seed, shuffle=shuffle, transform=self.transform,
                             drop_remainder=True, **kwargs)

    def held_out_dataset(self, samples, batch_size, seed=0, **kwargs):
        """Validation batches of held-out ``samples``: the same subjects and augmentations every epoch,
        so the pretext accuracies of different epochs are comparable."""
        batches = self.dataset(samples, batch_size=batch_size, seed=seed, shuffle=False, **kwargs)
        batches.set_epoch(0)
        return batches

    def _base_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


class RestorationTask(PretextTask):
    """Base of the tasks that restore their input with a whole U-Net (Genesis, MAE).

    The decoder is pretrained with the encoder, so pretraining saves the U-Net (``pretrained_model``)
    and fine-tuning from it starts both. The subclass gives the output activation and the input's
    name, and makes ``(distorted, target)`` batches in ``transform`` (``self.volumes(batch)`` checks them).
    """

    ranks = (3,)

    def __init__(self, encoder, activation, input_name, name, **kwargs):
        task = type(self).__name__
        encoder = check_encoder(encoder, task)
        unet = unet_for(encoder, activation, task)
        inputs = keras.Input(shape=encoder.input_shape[1:], name=input_name)
        super().__init__(inputs=inputs, outputs=unet(inputs), name=name, **kwargs)
        self._set_encoder(encoder)
        self.unet = unet

    def default_metrics(self):
        return []

    def pretrained_model(self):
        return self.unet

    def volumes(self, batch):
        """``batch`` as float32 volumes ``(N, D, H, W, C)``, or a one-line error."""
        from keras_ssl3d.errors import DataError

        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 5:
            raise DataError(f"{self.name} expects a batch shaped (N, D, H, W, C), got shape {batch.shape}")
        return batch
