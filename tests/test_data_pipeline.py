"""VolumeBatches: reproducible per-epoch order, the transform hook, and a cache feeding fit."""

import keras
import numpy as np
import pytest

from keras_ssl3d.data import open_cache, preprocess_dataset
from keras_ssl3d.data.pipeline import VolumeBatches
from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.errors import DataError

pytestmark = pytest.mark.multibackend


def _numbered(n, size=4):
    """Volume i is filled with the value i, so a batch tells which subjects it holds."""
    return np.arange(n, dtype=np.float32)[:, None, None, None, None] * np.ones((n, size, size, size, 1), np.float32)


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = VolumeBatches(_numbered(7), batch_size=3, seed=3)
    b = VolumeBatches(_numbered(7), batch_size=3, seed=3)
    assert len(a) == 3
    for e in range(3):
        np.testing.assert_array_equal(a.order(e), b.order(e))
        assert sorted(a.order(e).tolist()) == list(range(7))
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(a.order(0), VolumeBatches(_numbered(7), batch_size=3, seed=4).order(0))
    # A "resumed" instance told its epoch serves exactly the same batches.
    b.set_epoch(2)
    a.set_epoch(2)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][0][:, 0, 0, 0, 0], a.order(2)[i * 3:(i + 1) * 3])
    assert VolumeBatches(_numbered(7), batch_size=3, drop_remainder=True).__len__() == 2
    np.testing.assert_array_equal(VolumeBatches(_numbered(5), shuffle=False).order(4), np.arange(5))


def test_transform_gets_a_reproducible_rng_and_labels():
    x = _numbered(6)
    y = (x[..., 0] > 2).astype(np.uint8)

    def transform(images, labels, rng):
        return images + rng.random(), labels

    a = VolumeBatches((x, y), batch_size=2, seed=1, transform=transform, with_labels=True)
    b = VolumeBatches((x, y), batch_size=2, seed=1, transform=transform, with_labels=True)
    xa, ya = a[1]
    xb, yb = b[1]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, (xa.astype(int)[..., 0] > 2))  # labels follow their images
    assert not np.array_equal(a[0][0] - np.floor(a[0][0]), xa - np.floor(xa))  # a new draw per batch
    plain = VolumeBatches((x, y), batch_size=4, with_labels=True, shuffle=False)
    xs, ys = plain[1]
    assert xs.shape == (2, 4, 4, 4, 1) and ys.shape == (2, 4, 4, 4)
    assert len(VolumeBatches(x, batch_size=4)[0]) == 1  # unlabelled: (images,)


def test_bad_sources():
    with pytest.raises(DataError, match=r"expected volumes \(N, D, H, W, C\) or images"):
        VolumeBatches(np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="no labels"):
        VolumeBatches(_numbered(2), with_labels=True)
    with pytest.raises(DataError, match="out of range"):
        VolumeBatches(_numbered(2), indices=[0, 5])


class _Recording(VolumeBatches):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = []

    def __getitem__(self, index):
        batch = super().__getitem__(index)
        self.served.append((self.epoch, tuple(int(v) for v in batch[0][:, 0, 0, 0, 0])))
        return batch


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_sees_the_batches_of_its_epoch_number(workers):
    def transform(images, rng):
        return images, images.mean(axis=(1, 2, 3))

    model = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.GlobalAveragePooling3D(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    data = _Recording(_numbered(7), batch_size=3, seed=1, transform=transform, workers=workers)
    model.fit(data, epochs=3, callbacks=[data.epoch_callback()], verbose=0)

    def expected(e):
        return {tuple(int(v) for v in data.batch_indices(i, e)) for i in range(len(data))}

    for e in range(3):
        assert {ids for ep, ids in data.served if ep == e} == expected(e)
    # A resumed fit (initial_epoch=2) on a fresh object serves epoch 2's batches.
    resumed = _Recording(_numbered(7), batch_size=3, seed=1, transform=transform, workers=workers)
    model.fit(resumed, epochs=3, initial_epoch=2, callbacks=[resumed.epoch_callback()], verbose=0)
    assert {ids for ep, ids in resumed.served if ep == 2} == expected(2)
    assert {ep for ep, _ in resumed.served} <= {0, 2}  # (0: a trainer may peek before fitting)


def test_cache_feeds_fit(tmp_path):
    # 4 subjects in batches of 2: one batch shape, so JAX compiles the step once.
    src = make_brats_like(tmp_path / "brats", n_subjects=4, shape=(12, 12, 10), seed=0)
    preprocess_dataset(src, tmp_path / "cache", size=16)
    cache = open_cache(tmp_path / "cache")
    data = VolumeBatches(cache, batch_size=2, seed=0, with_labels=True)
    x, y = data[0]
    np.testing.assert_array_equal(VolumeBatches(tmp_path / "cache", batch_size=2, with_labels=True)[0][1], y)
    assert x.shape == (2, 16, 16, 16, 4) and x.dtype == np.float32 and y.dtype == np.int32  # class ids
    # A two-layer per-voxel classifier: a U-Net compiles for minutes under JAX on CPU, and what is
    # tested here is the data path (the Segmenter3D run is benchmarks/synthetic_learnability.py).
    model = keras.Sequential([
        keras.Input((None, None, None, cache.num_channels)),
        keras.layers.Conv3D(8, 3, padding="same", activation="relu"),
        keras.layers.Conv3D(cache.num_classes, 1, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    history = model.fit(data, epochs=2, callbacks=[data.epoch_callback()], verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    pred = model.predict(VolumeBatches(cache, batch_size=4, shuffle=False), verbose=0)
    assert pred.shape == (4, 16, 16, 16, 4)


def _small_cache(tmp_path, n=5, size=8):
    src = make_brats_like(tmp_path / "brats", n_subjects=n, shape=(10, 10, 8), seed=0)
    preprocess_dataset(src, tmp_path / "cache", size=size)
    return src, open_cache(tmp_path / "cache")


def test_streamed_batches_equal_the_in_memory_ones(tmp_path):
    from keras_ssl3d.models import Encoder3D
    from keras_ssl3d.tasks import Rotation

    _, cache = _small_cache(tmp_path)
    in_memory = cache.images()
    task = Rotation(Encoder3D(in_channels=4, filters=(4,)))
    streamed = task.dataset(cache, batch_size=2, seed=3)
    stacked = task.dataset(in_memory, batch_size=2, seed=3)
    assert len(streamed) == len(stacked) == 2  # 5 subjects, the incomplete batch dropped
    for epoch in (0, 1):
        streamed.set_epoch(epoch)
        stacked.set_epoch(epoch)
        for i in range(len(streamed)):
            (xs, ys), (xm, ym) = streamed[i], stacked[i]
            np.testing.assert_array_equal(xs, xm)
            np.testing.assert_array_equal(ys, ym)
    # Labels too, through the same pipeline.
    a = VolumeBatches(cache, batch_size=2, seed=1, with_labels=True)
    b = VolumeBatches((in_memory, cache.labels()), batch_size=2, seed=1, with_labels=True)
    for i in range(len(a)):
        for u, v in zip(a[i], b[i]):
            np.testing.assert_array_equal(u, v)


def test_cache_is_served_at_another_size_per_subject(tmp_path):
    from keras_ssl3d.data import resize_labels, resize_volume

    _, cache = _small_cache(tmp_path, n=2, size=8)
    small = open_cache(tmp_path / "cache", size=4)
    assert small.spatial_shape == (4, 4, 4) and cache.spatial_shape == (8, 8, 8)
    np.testing.assert_array_equal(small.image(1), resize_volume(cache.image(1), (4, 4, 4)))
    np.testing.assert_array_equal(small.label(1), resize_labels(cache.label(1), (4, 4, 4)))
    assert VolumeBatches(small, batch_size=2, with_labels=True)[0][0].shape == (2, 4, 4, 4, 4)
    assert open_cache(tmp_path / "cache", size=8).image(0) is not None  # same size: the memory map itself
    assert isinstance(open_cache(tmp_path / "cache", size=8).image(0), np.memmap)


def test_a_raw_data_set_is_cached_once_and_reused(tmp_path):
    from keras_ssl3d.data import default_cache_dir, ensure_cache

    src = make_brats_like(tmp_path / "raw", n_subjects=3, shape=(10, 10, 8), seed=0)
    said = []
    folder = ensure_cache(src, 8, crop_foreground=True, root=tmp_path / "runs", echo=said.append)
    assert folder == default_cache_dir(src, tmp_path / "runs", 8, True)
    assert folder.parent == tmp_path / "runs" / "keras-ssl3d-cache" and folder.name.startswith("raw-8-crop-")
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")}
    assert len(stamps) == 6  # 3 images + 3 labels
    again = ensure_cache(src, 8, crop_foreground=True, root=tmp_path / "runs", echo=said.append)
    assert again == folder and {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")} == stamps
    assert said[0].startswith("Preprocessed 3 subjects") and said[1].startswith("Using the cache")
    # Other settings get their own folder; a cache given directly is used as it is.
    assert ensure_cache(src, 8, crop_foreground=False, root=tmp_path / "runs") != folder
    assert ensure_cache(folder, 16, crop_foreground=True) == folder


def _mirrors(volume, rank):
    """``{flipped axes: volume flipped along them}`` for every subset of the ``rank`` spatial axes."""
    import itertools

    out = {}
    for k in range(rank + 1):
        for axes in itertools.combinations(range(rank), k):
            out[axes] = np.flip(volume, axis=axes) if axes else volume
    return out


@pytest.mark.parametrize("shape", [(5, 4, 3), (6, 5)])  # 3D volumes and 2D images with label maps
def test_flips_move_image_and_label_map_together(shape):
    from keras_ssl3d.finetune.augment import augment_batch

    rng = np.random.default_rng(0)
    images = rng.random((16, *shape, 2)).astype(np.float32)  # no symmetry: one flip pattern matches
    labels = (images[..., 0] > 0.5).astype(np.int32)
    x, y = augment_batch(images, labels, np.random.default_rng(7), mode="flip")
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == images.shape and y.shape == labels.shape
    np.testing.assert_array_equal(y, (x[..., 0] > 0.5).astype(np.int32))  # still the thresholded channel
    flipped = 0
    for i in range(len(images)):
        matches = [axes for axes, v in _mirrors(images[i], len(shape)).items() if np.array_equal(v, x[i])]
        assert len(matches) == 1, matches
        np.testing.assert_array_equal(y[i], _mirrors(labels[i], len(shape))[matches[0]])
        flipped += len(matches[0])
    assert 0.25 * 16 * len(shape) < flipped < 0.75 * 16 * len(shape)  # each axis with probability 1/2
    np.testing.assert_array_equal(labels, (images[..., 0] > 0.5))  # the inputs are not changed in place


def test_intensity_augmentation_is_a_per_channel_affine_change_of_the_flipped_image():
    from keras_ssl3d.finetune.augment import augment_batch

    images = np.random.default_rng(1).random((4, 3, 4, 5, 2)).astype(np.float32)
    labels = np.zeros((4, 3, 4, 5), np.int32)
    xf, yf = augment_batch(images, labels, np.random.default_rng(3), mode="flip")
    xi, yi = augment_batch(images, labels, np.random.default_rng(3), mode="flip_intensity")
    np.testing.assert_array_equal(yi, yf)  # the same flips (drawn first); labels get no intensity change
    for i in range(4):
        for c in range(2):
            scale, shift = np.polyfit(xf[i, ..., c].ravel(), xi[i, ..., c].ravel(), 1)
            assert 0.9 <= scale <= 1.1 and -0.1 <= shift <= 0.1
            np.testing.assert_allclose(xi[i, ..., c], scale * xf[i, ..., c] + shift, atol=1e-5)
    scales = {round(float(np.polyfit(xf[i, ..., c].ravel(), xi[i, ..., c].ravel(), 1)[0]), 4)
              for i in range(4) for c in range(2)}
    assert len(scales) == 8  # one draw per sample and channel


def test_augmented_batches_are_fixed_by_seed_epoch_and_index():
    from keras_ssl3d.finetune.augment import augmentation

    rng = np.random.default_rng(0)
    x = rng.random((6, 4, 5, 6, 1)).astype(np.float32)
    y = (x[..., 0] > 0.5).astype(np.uint8)
    make = lambda seed: VolumeBatches((x, y), batch_size=3, seed=seed, shuffle=False, with_labels=True,  # noqa: E731
                                      transform=augmentation("flip_intensity"))
    a, b = make(1), make(1)
    a.set_epoch(2)
    b.set_epoch(2)  # e.g. a resumed run
    for i in range(2):
        (xa, ya), (xb, yb) = a[i], b[i]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert ya.dtype == np.int32
    b.set_epoch(3)
    assert not np.array_equal(a[0][0], b[0][0])  # other flips and intensities next epoch
    other = make(2)
    other.set_epoch(2)
    assert not np.array_equal(a[0][0], other[0][0])  # and with another seed
    plain = VolumeBatches((x, y), batch_size=3, shuffle=False, with_labels=True)  # validation: untouched
    np.testing.assert_array_equal(plain[0][0], x[:3])
    np.testing.assert_array_equal(plain[0][1], y[:3])
    assert augmentation("none") is None


def test_2d_grades_are_kept_while_images_are_flipped():
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.augment import augment_batch

    images = np.random.default_rng(0).random((8, 5, 6, 3)).astype(np.float32)
    grades = np.arange(8, dtype=np.int32)
    x, g = augment_batch(images, grades, np.random.default_rng(0), mode="flip")
    np.testing.assert_array_equal(g, grades)
    assert any(not np.array_equal(x[i], images[i]) for i in range(8))
    for i in range(8):
        assert any(np.array_equal(v, x[i]) for v in _mirrors(images[i], 2).values())
    with pytest.raises(ConfigError, match="--augment"):
        augment_batch(images, grades, np.random.default_rng(0), mode="rotate")
