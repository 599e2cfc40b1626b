"""Time to build the jigsaw permutation set (1000 of 27 tiles) and its Hamming distances.

    python benchmarks/permutations.py [--count 1000] [--n 27] [--seed 0]

Calls ``generate_permutations`` directly, which never reads the on-disk cache (that is
``load_permutations``), so the time is a fresh build. For comparison it also reports the
distances of ``--count`` uniformly random permutations (and of 100, the original code's set).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, peak_rss_mb  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--n", type=int, default=27)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import numpy as np

    from keras_ssl3d.tasks.permutations import generate_permutations, hamming_stats

    t0 = time.perf_counter()
    perms = generate_permutations(args.count, args.n, seed=args.seed)
    build_s = time.perf_counter() - t0
    stats = hamming_stats(perms)
    unique = len(np.unique(perms, axis=0)) == len(perms)
    valid = bool(np.array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(args.n), perms.shape)))
    rng = np.random.default_rng(args.seed)
    random_sets = {}
    for count in sorted({100, args.count}):
        random = np.argsort(rng.random((count, args.n)), axis=1)
        random_sets[str(count)] = hamming_stats(random)
    emit({"kind": "permutations", "count": args.count, "n": args.n, "seed": args.seed, "build_s": build_s,
          "min_hamming": stats["min"], "mean_hamming": stats["mean"], "max_hamming": stats["max"],
          "unique": bool(unique), "valid": valid, "random": random_sets, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
