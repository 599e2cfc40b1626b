"""Data pipeline speed: prints one JSON line per measurement.

- NIfTI load time of a 240x240x155 four-modality BraTS-sized subject (``load_volume``);
- ``preprocess_dataset`` subjects/s with 1 and 2 worker processes (load, resize to 128^3,
  scale, write the cache);
- ``VolumeBatches`` volumes/s at 128^3 x 4 channels from the memory-mapped cache, through Keras's
  own PyDataset adapter (the path ``fit`` uses), with 1 and 2 workers, without and with a
  rotation transform (what the rotation pretext task does to each volume).

    python benchmarks/pipeline.py [--subjects 6] [--repeats 3]
"""

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BRATS_SHAPE = (240, 240, 155)


def emit(**kw):
    print(json.dumps(kw), flush=True)


def make_subjects(root, n, seed=0):
    """One full-size BraTS-like subject written once, copied to ``n`` subject folders."""
    from keras_ssl3d.data.synthetic import make_brats_like

    make_brats_like(root / "_one", n_subjects=1, shape=BRATS_SHAPE, seed=seed)
    first = next((root / "_one").iterdir())
    for i in range(n):
        sid = f"BraTS_Bench_{i:03d}"
        d = root / "data" / sid
        d.mkdir(parents=True)
        for f in first.iterdir():
            shutil.copy(f, d / f.name.replace(first.name, sid))
    shutil.rmtree(root / "_one")
    return root / "data"


def rotate_transform(images, rng):
    """Rotation pretext-style transform: one of 4 rotations about a random axis pair, + its class."""
    out = np.empty_like(images)
    y = rng.integers(0, 4, len(images))
    for i, k in enumerate(y):
        out[i] = np.rot90(images[i], k=int(k), axes=(0, 1))
    return out, y


def pipeline_rate(cache, workers, transform, epochs, batch_size=2):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from keras_ssl3d.data.pipeline import VolumeBatches

    data = VolumeBatches(cache, batch_size=batch_size, seed=0, transform=transform, workers=workers,
                         max_queue_size=4)
    adapter = PyDatasetAdapter(data, shuffle=False)
    volumes = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        adapter.on_epoch_begin()
        for batch in adapter.get_numpy_iterator():
            volumes += len(batch[0])
        adapter.on_epoch_end()
    return volumes / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    from keras_ssl3d.data import load_volume, open_cache, preprocess_dataset
    from keras_ssl3d.data.layouts import discover

    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = __import__("pathlib").Path(tmp)
        src = make_subjects(tmp, args.subjects)
        subject = discover(src).subjects[0]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            vol = load_volume(subject.image_paths)
            times.append(time.perf_counter() - t0)
        emit(benchmark="nifti_load", shape=list(vol.array.shape), files=len(subject.image_paths),
             dtype="int16 .nii.gz", median_s=round(float(np.median(times)), 3), min_s=round(min(times), 3))

        for workers in (1, 2):
            out = tmp / f"cache_w{workers}"
            t0 = time.perf_counter()
            preprocess_dataset(src, out, size=args.size, workers=workers)
            dt = time.perf_counter() - t0
            emit(benchmark="preprocess", workers=workers, subjects=args.subjects, size=args.size,
                 seconds=round(dt, 2), subjects_per_s=round(args.subjects / dt, 3), cpu_count=cores)

        cache = open_cache(tmp / "cache_w1")
        pipeline_rate(cache, 1, None, 1)  # warm the page cache
        for transform_name, transform in (("none", None), ("rotation", rotate_transform)):
            for workers in (1, 2):
                rate = pipeline_rate(cache, workers, transform, epochs=args.repeats)
                emit(benchmark="pipeline", size=args.size, channels=cache.num_channels, batch_size=2,
                     workers=workers, transform=transform_name, volumes_per_s=round(rate, 2), cpu_count=cores)


if __name__ == "__main__":
    main()
