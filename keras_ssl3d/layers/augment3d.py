"""Exemplar/SimCLR augmentations on the accelerator: seeded, backend-agnostic Keras layers.

Why: the numpy transforms (``tasks.transforms.exemplar_augment``) run ~13 volumes/s per CPU core
at 128^3, far below what a GPU consumes; as layers inside the task model they run in the training
step and the host only streams cached volumes. Each layer draws per sample, with the same
distribution as its numpy twin (``random_flip``, ``random_rotation``, ``random_brightness_contrast``,
``random_zoom``); the draws differ, the laws do not (tests/test_augment3d.py checks them).

Inputs are ``(N, D, H, W, C)``. The layers augment whenever called, in training and inference
alike: they make a pretext task's inputs (a positive must differ from its anchor in validation
too), they are not a regulariser. Zoom is linear interpolation about the centre expressed as
three per-sample ``(L, L)`` interpolation matrices (``einsum``), with 0 outside the volume.
"""

import math

import keras
from keras import ops

AUGMENT_ON = ("host", "device", "auto")
# The 9 quarter turns: (axes of the turned plane in (N, D, H, W, C), quarter turns), about D, H, W; the
# same set as the numpy transforms' rotation classes (``tasks.transforms.ROTATIONS_3D`` without the
# identity; a test checks it).
QUARTER_TURNS_3D = tuple((axes, k) for axes in ((2, 3), (1, 3), (1, 2)) for k in (1, 2, 3))


def accelerator_visible():
    """Whether the Keras backend sees a GPU/TPU (not only CPUs)."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
        if backend == "jax":
            import jax

            return any(d.platform != "cpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # a broken accelerator stack: stay on the host
        return False
    return False


def resolve_augment_on(value, rank=3):
    """``(host|device, reason)`` for a task's ``augment_on``: ``auto`` is device only with an accelerator
    (and a 3D encoder: these layers are 3D)."""
    from keras_ssl3d.errors import ConfigError

    if value not in AUGMENT_ON:
        raise ConfigError(f"augment_on must be one of {', '.join(AUGMENT_ON)}, got {value!r}")
    if rank != 3:
        if value == "device":
            raise ConfigError("augment_on=device needs a 3D encoder (the device augmentations are 3D)")
        return "host", "Augmentation on the host in numpy (2D)"
    if value != "auto":
        return value, f"Augmentation on the {value} (augment_on={value})"
    if accelerator_visible():
        return "device", "Augmentation on the device (augment_on=auto: an accelerator is visible)"
    return "host", "Augmentation on the host in numpy (augment_on=auto: no accelerator, numpy is faster on CPUs)"


def _per_sample(values, rank):
    return ops.reshape(values, (-1,) + (1,) * (rank + 1))


class _Random3D(keras.layers.Layer):
    """Base: a probability ``p``, a ``SeedGenerator`` and a per-sample ``apply`` mask."""

    def __init__(self, p=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, n, low=0.0, high=1.0):
        return keras.random.uniform((n,), minval=low, maxval=high, seed=self.seed_generator)

    def _apply(self, n):
        return self._uniform(n) < self.p

    def build(self, input_shape):  # no weights; the seed generator's state is made in __init__
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RandomFlip3D(_Random3D):
    """With probability ``p``, flip each sample along one of its three spatial axes, drawn uniformly."""

    def call(self, x):
        n = ops.shape(x)[0]
        apply = self._apply(n)
        axis = ops.cast(ops.floor(self._uniform(n, 0.0, 3.0)), "int32")  # 0, 1, 2 -> spatial axes 1, 2, 3
        out = x
        for a in range(3):
            out = ops.where(_per_sample(apply & (axis == a), 3), ops.flip(x, axis=a + 1), out)
        return out


def quarter_turn(x, axes, k):
    """``np.rot90(x, k, axes)`` with ``keras.ops`` (``axes`` of the batched array)."""
    a, b = axes
    perm = list(range(len(x.shape)))
    perm[a], perm[b] = perm[b], perm[a]
    if k == 1:
        return ops.transpose(ops.flip(x, axis=b), perm)
    if k == 2:
        return ops.flip(ops.flip(x, axis=a), axis=b)
    return ops.flip(ops.transpose(x, perm), axis=b)


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RandomQuarterTurn3D(_Random3D):
    """With probability ``p``, rotate each sample by one of the 9 quarter turns ``QUARTER_TURNS_3D``
    (90/180/270 degrees about each axis), drawn uniformly; non-cubic planes only turn 180 degrees
    (sizes unknown when traced, e.g. an encoder built for any size, are taken as cubic: pretraining
    inputs are size^3)."""

    def call(self, x):
        n = ops.shape(x)[0]
        allowed = [(axes, k) for axes, k in QUARTER_TURNS_3D  # unknown sizes (None) count as equal
                   if k == 2 or x.shape[axes[0]] == x.shape[axes[1]]]
        pick = ops.cast(ops.floor(self._uniform(n, 0.0, float(len(allowed)))), "int32")
        pick = ops.minimum(pick, len(allowed) - 1)
        label = ops.where(self._apply(n), pick, -1)  # -1: not turned
        out = x
        for c, (axes, k) in enumerate(allowed):
            out = ops.where(_per_sample(label == c, 3), quarter_turn(x, axes, k), out)
        return out


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RandomBrightnessContrast3D(_Random3D):
    """With probability ``p``: ``clip((x - mean) * c + mean + b, 0, 1)``, ``c ~ U(1 +- contrast)``,
    ``b ~ U(+-brightness)`` per sample, the mean per sample and channel (intensities in [0, 1])."""

    def __init__(self, p=0.5, brightness=0.1, contrast=0.25, seed=None, **kwargs):
        super().__init__(p=p, seed=seed, **kwargs)
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def call(self, x):
        n = ops.shape(x)[0]
        apply = _per_sample(self._apply(n), 3)
        c = ops.cast(_per_sample(self._uniform(n, 1 - self.contrast, 1 + self.contrast), 3), x.dtype)
        b = ops.cast(_per_sample(self._uniform(n, -self.brightness, self.brightness), 3), x.dtype)
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        return ops.where(apply, ops.clip((x - mean) * c + mean + b, 0.0, 1.0), x)

    def get_config(self):
        config = super().get_config()
        config.update(brightness=self.brightness, contrast=self.contrast)
        return config


def interpolation_matrices(length, factors):
    """``(N, L, L)`` matrices of a zoom about the centre by ``factors`` (linear, 0 outside), as
    ``tasks.transforms.zoom`` computes along one axis."""
    last = ops.cast(length, "float32") - 1.0
    centre = last / 2
    coords = (ops.cast(ops.arange(length), "float32")[None, :] - centre) / factors[:, None] + centre   # (N, L)
    inside = ops.cast((coords >= -1e-6) & (coords <= last + 1e-6), "float32")
    i0 = ops.clip(ops.floor(coords), 0.0, last)
    i1 = ops.clip(i0 + 1, 0.0, last)
    w = ops.clip(coords - i0, 0.0, 1.0) * inside
    hot0 = ops.one_hot(ops.cast(i0, "int32"), length)
    hot1 = ops.one_hot(ops.cast(i1, "int32"), length)
    return (inside - w)[..., None] * hot0 + w[..., None] * hot1


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class RandomZoom3D(_Random3D):
    """With probability ``p``, zoom each sample about its centre by a factor drawn log-uniformly from
    ``scale`` (>1 magnifies), linear interpolation, 0 outside the input."""

    def __init__(self, p=0.2, scale=(0.8, 1.25), seed=None, **kwargs):
        super().__init__(p=p, seed=seed, **kwargs)
        self.scale = (float(scale[0]), float(scale[1]))

    def call(self, x):
        n = ops.shape(x)[0]
        apply = self._apply(n)
        factors = ops.exp(self._uniform(n, math.log(self.scale[0]), math.log(self.scale[1])))
        factors = ops.where(apply, factors, 1.0)
        out = ops.cast(x, "float32")
        for axis, pattern in ((1, "nij,njhwc->nihwc"), (2, "nij,ndjwc->ndiwc"), (3, "nij,ndhjc->ndhic")):
            length = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
            out = ops.einsum(pattern, interpolation_matrices(length, factors), out)
        return ops.where(_per_sample(apply, 3), ops.cast(out, x.dtype), x)

    def get_config(self):
        config = super().get_config()
        config.update(scale=list(self.scale))
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class ExemplarAugment3D(keras.layers.Layer):
    """The Exemplar/SimCLR augmentations in the numpy order: flip, rotation, brightness/contrast, zoom
    (``tasks.transforms.exemplar_augment`` on the device)."""

    def __init__(self, flip_p=0.5, rotation_p=0.5, color_p=0.5, zoom_p=0.2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.flip_p, self.rotation_p, self.color_p, self.zoom_p = map(float, (flip_p, rotation_p, color_p, zoom_p))
        self.seed = seed
        seeds = [None if seed is None else int(seed) + i for i in range(4)]
        self.flip = RandomFlip3D(self.flip_p, seed=seeds[0], name="flip")
        self.rotation = RandomQuarterTurn3D(self.rotation_p, seed=seeds[1], name="rotation")
        self.color = RandomBrightnessContrast3D(self.color_p, seed=seeds[2], name="brightness_contrast")
        self.zoom = RandomZoom3D(self.zoom_p, seed=seeds[3], name="zoom")

    def build(self, input_shape):
        for layer in (self.flip, self.rotation, self.color, self.zoom):
            layer.build(input_shape)
        self.built = True

    def call(self, x):
        return self.zoom(self.color(self.rotation(self.flip(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(flip_p=self.flip_p, rotation_p=self.rotation_p, color_p=self.color_p, zoom_p=self.zoom_p,
                      seed=self.seed)
        return config
