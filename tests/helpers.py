"""Small builders shared by the tests: tiny widths and shapes so the suite runs on 2 cores."""

import numpy as np

from keras_ssl3d import Encoder2D, Encoder3D

TINY_FILTERS_3D = (4, 8, 16)


def tiny_encoder3d(in_channels=1, filters=TINY_FILTERS_3D, **kwargs):
    return Encoder3D(in_channels=in_channels, filters=filters, **kwargs)


def tiny_encoder2d(in_channels=3, **kwargs):
    kwargs.setdefault("blocks", (1, 1))
    kwargs.setdefault("growth_rate", 4)
    kwargs.setdefault("stem_filters", 8)
    return Encoder2D(in_channels=in_channels, **kwargs)


def random_volumes(n=2, size=16, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, size, channels), dtype=np.float32)


def random_images(n=2, size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels), dtype=np.float32)


def to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def structured_samples(n=16, size=16, rank=3, seed=0, blob=0.05):
    """Unlabeled samples with learnable pretext structure: ``(n, *[size]*rank, 3)`` in [0, 1].

    Channel ``a`` (``a < rank``) is an intensity ramp along spatial axis ``a`` (so a patch's
    mean intensities give its grid position, and every rotation changes the ramps' directions
    differently); in 2D the third channel is texture only. On top: a per-sample brightness
    offset and smooth per-sample random blobs, so that samples differ from each other.
    """
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, size)] * rank, indexing="ij")
    ramps = [axes[a] for a in range(rank)] + [np.zeros_like(axes[0])] * (3 - rank)
    coarse = max(2, size // 4)
    blobs = rng.normal(size=(n, *(coarse,) * rank, 3))
    for axis in range(1, rank + 1):  # upsample then box-smooth: smooth random blobs
        blobs = np.repeat(blobs, -(-size // coarse), axis=axis).take(range(size), axis=axis)
    kernel = np.ones(3) / 3
    for axis in range(1, rank + 1):
        blobs = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, blobs)
    offset = rng.uniform(-0.15, 0.15, size=(n,) + (1,) * (rank + 1))
    x = 0.5 + 0.3 * np.stack(ramps, axis=-1)[None] + offset + blob * blobs
    return np.clip(x, 0, 1).astype(np.float32)


def refused_in_one_line(argv, capsys, named):
    """Run a CLI command that must refuse: exit status 2, ONE line naming ``named``, no traceback; returns it."""
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli

    capsys.readouterr()
    code = run_cli(cli, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in captured.err, lines
    assert str(named) in lines[0], lines[0]
    return lines[0]
