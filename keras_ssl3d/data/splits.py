"""Subject splits by seed, never by file order: held-out test subjects, validation subjects, label subsets.

Each split depends on its own seed only (``split_seed`` for test and validation, ``seed`` for the label
subset), so subsets are identical for every encoder, and nested (5 % is inside 10 %) for one seed.
"""

import math

import numpy as np

from keras_ssl3d.errors import ConfigError


def split_test(n, test_fraction=0.0, split_seed=0):
    """``(rest, test)`` subject indices: the held-out test subjects depend on ``split_seed`` only."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if not test_fraction:
        return np.arange(n), np.arange(0)
    n_test = max(1, int(round(n * float(test_fraction))))
    if n - n_test < 1:
        raise ConfigError(f"--test-fraction {test_fraction} leaves no training subject of {n}")
    order = np.random.default_rng([int(split_seed), 3]).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def split_indices(n, val_fraction=0.2, split_seed=0):
    """``(train_pool, validation)`` subject indices; the validation set depends on ``split_seed`` only."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([int(split_seed), 1]).permutation(n)
    n_val = int(round(n * float(val_fraction)))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def label_subset(train_pool, fraction, seed=0):
    """The labelled subjects used by a run: ``ceil(fraction * n)`` (at least 1) of ``train_pool``, by seed."""
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    pool = np.asarray(train_pool)
    if pool.size == 0:
        raise ConfigError("no training subjects left after the validation split")
    order = pool[np.random.default_rng([int(seed), 2]).permutation(pool.size)]
    k = max(1, math.ceil(fraction * pool.size - 1e-9))
    return np.sort(order[:k])
