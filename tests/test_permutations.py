"""Jigsaw permutation sets: unique, far apart in Hamming distance, deterministic, cached safely."""

import time

import numpy as np
import pytest

from keras_ssl3d.tasks import permutations as P


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_SSL3D_CACHE", str(tmp_path))
    return tmp_path


def test_1000_of_27_far_apart(cache):
    start = time.perf_counter()
    perms = P.load_permutations(1000, 27, seed=0)
    seconds = time.perf_counter() - start
    stats = P.hamming_stats(perms)
    print(f"\n1000x27 permutations: {stats}, generated in {seconds:.2f} s")
    assert perms.shape == (1000, 27)
    assert len(np.unique(perms, axis=0)) == 1000
    assert (np.sort(perms, axis=1) == np.arange(27)).all()
    assert stats["min"] >= 22
    assert stats["mean"] > 25.5
    # the cache holds exactly the same set, as a plain (non-pickled) array
    files = list((cache / "permutations").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), perms)
    again = P.load_permutations(1000, 27, seed=0)
    np.testing.assert_array_equal(again, perms)


def test_100_of_9_beats_random(cache):
    perms = P.load_permutations(100, 9, seed=0)
    stats = P.hamming_stats(perms)
    print(f"\n100x9 permutations: {stats}")
    rng = np.random.default_rng(0)
    random_stats = P.hamming_stats(np.argsort(rng.random((100, 9)), axis=1))
    assert len(np.unique(perms, axis=0)) == 100
    assert stats["min"] > random_stats["min"]
    assert stats["mean"] > random_stats["mean"]


def test_deterministic_and_seeded(cache):
    a = P.generate_permutations(50, 27, seed=3, pool=5000)
    b = P.generate_permutations(50, 27, seed=3, pool=5000)
    c = P.generate_permutations(50, 27, seed=4, pool=5000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_hamming_stats_by_hand():
    perms = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    # distances: (0,1)=2, (0,2)=3, (1,2)=2
    assert P.hamming_stats(perms) == {"count": 3, "n": 3, "min": 2, "mean": 7 / 3, "max": 3}


def test_corrupt_cache_is_regenerated(cache):
    perms = P.load_permutations(20, 9, seed=1)
    path = next((cache / "permutations").glob("*.npy"))
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(P.load_permutations(20, 9, seed=1), perms)
    np.save(path, np.zeros((20, 9), dtype=np.int64))  # wrong content: not permutations
    np.testing.assert_array_equal(P.load_permutations(20, 9, seed=1), perms)


def test_rejects_impossible_requests():
    with pytest.raises(ValueError):
        P.generate_permutations(7, 3)
