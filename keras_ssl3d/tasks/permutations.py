"""The jigsaw task's permutation set: maximal Hamming distance, deterministic, cached on disk.

Noroozi & Favaro (2016) pick puzzle permutations greedily so that they are far apart in Hamming
distance (the number of tiles in a different place); the farther apart, the less ambiguous the
classes. Their algorithm enumerates all 9! permutations, which is impossible for the 27 tiles of
a 3D puzzle (27! ~ 1e28). We keep the greedy farthest-point selection but draw the candidates
from a large random pool (all n! permutations when n! is small, e.g. 9 tiles):

1. start from a random candidate;
2. repeatedly add the candidate whose *minimum* distance to the chosen set is largest, ties
   broken by the largest *mean* distance (Noroozi & Favaro's criterion);
3. after each pick, update every candidate's min/sum distance with one vectorised comparison.

This is O(count * pool * n) byte comparisons: ~1 s for 1000 of 27 from a 50 000 pool, and it
reaches a minimum pairwise distance of 22-23 (random sets of only 100 permutations of 27 have
~19). The result is a pure function of ``(count, n, seed, pool)`` and is cached as a plain
``.npy`` file (never pickled) in ``$KERAS_SSL3D_CACHE`` or ``~/.cache/keras_ssl3d``.
"""

import itertools
import math
import os
from pathlib import Path

import numpy as np

from keras_ssl3d.fileio import atomic_path

DEFAULT_POOL = 50_000
_VERSION = 1


def cache_dir():
    """Where generated artifacts (permutation sets) are cached."""
    root = os.environ.get("KERAS_SSL3D_CACHE")
    if root:
        return Path(root).expanduser()
    return Path.home() / ".cache" / "keras_ssl3d"


def _candidate_pool(n, pool, rng):
    if math.factorial(n) <= pool:
        return np.array(list(itertools.permutations(range(n))), dtype=np.uint8)
    keys = rng.random((pool, n))
    candidates = np.argsort(keys, axis=1).astype(np.uint8)
    return np.unique(candidates, axis=0)  # sorted rows; duplicates are astronomically rare for n=27


def generate_permutations(count, n, seed=0, pool=DEFAULT_POOL):
    """Select ``count`` permutations of ``range(n)`` with large pairwise Hamming distances.

    Returns an ``(count, n)`` int array; row 0 is a random start, not the identity.
    """
    count, n = int(count), int(n)
    if count < 1 or n < 2:
        raise ValueError(f"need count >= 1 and n >= 2, got count={count}, n={n}")
    if count > math.factorial(n):
        raise ValueError(f"there are only {math.factorial(n)} permutations of {n}, asked for {count}")
    rng = np.random.default_rng([_VERSION, n, count, int(seed)])
    candidates = _candidate_pool(n, max(int(pool), count), rng)
    m = len(candidates)
    min_dist = np.full(m, n + 1, dtype=np.int32)
    sum_dist = np.zeros(m, dtype=np.int64)
    chosen = np.empty(count, dtype=np.int64)
    available = np.ones(m, dtype=bool)
    pick = int(rng.integers(m))
    for i in range(count):
        chosen[i] = pick
        available[pick] = False
        dist = np.count_nonzero(candidates != candidates[pick], axis=1)
        np.minimum(min_dist, dist, out=min_dist)
        sum_dist += dist
        if i + 1 == count:
            break
        # lexicographic (min, sum): sum < count * n * 1 fits below one step of min.
        score = min_dist.astype(np.int64) * (count * (n + 1)) + sum_dist
        score[~available] = -1
        pick = int(np.argmax(score))
    return candidates[chosen].astype(np.int64)


def hamming_stats(permutations):
    """Min, mean and max pairwise Hamming distance of a permutation set (rows), and its size."""
    perms = np.asarray(permutations)
    count, n = perms.shape
    if count < 2:
        return {"count": count, "n": n, "min": None, "mean": None, "max": None}
    total, lo, hi, pairs = 0, n, 0, 0
    for start in range(0, count, 256):  # blocks keep the (block, count, n) comparison small
        block = perms[start:start + 256]
        dist = np.count_nonzero(block[:, None, :] != perms[None, :, :], axis=2)
        rows = np.arange(start, start + len(block))
        mask = np.arange(count)[None, :] > rows[:, None]  # each pair once
        values = dist[mask]
        if values.size:
            total += int(values.sum())
            pairs += values.size
            lo = min(lo, int(values.min()))
            hi = max(hi, int(values.max()))
    return {"count": count, "n": n, "min": lo, "mean": total / pairs, "max": hi}


def _cache_file(count, n, seed, pool):
    return cache_dir() / "permutations" / f"perm_v{_VERSION}_{count}x{n}_seed{seed}_pool{pool}.npy"


def _valid(perms, count, n):
    return (perms.shape == (count, n) and np.issubdtype(perms.dtype, np.integer)
            and np.array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(n), (count, n)))
            and len(np.unique(perms, axis=0)) == count)


def load_permutations(count, n, seed=0, pool=DEFAULT_POOL, cache=True):
    """The permutation set for ``(count, n, seed)``: read from the cache, else generated and cached.

    A missing, unreadable or corrupt cache file is regenerated (the set is deterministic).
    """
    count, n, seed, pool = int(count), int(n), int(seed), int(pool)
    path = _cache_file(count, n, seed, pool)
    if cache and path.is_file():
        try:
            perms = np.load(path, allow_pickle=False)
            if _valid(perms, count, n):
                return perms.astype(np.int64)
        except (OSError, ValueError):
            pass
    perms = generate_permutations(count, n, seed=seed, pool=pool)
    if cache:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, perms, allow_pickle=False)
        except OSError:
            pass  # a read-only home must not stop training: the set is cheap to rebuild
    return perms
