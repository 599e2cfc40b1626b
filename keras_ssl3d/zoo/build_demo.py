"""Build the bundled DEMO presets: tiny encoders pretrained on built-in synthetic BraTS-like data.

    python -m keras_ssl3d.zoo.build_demo [--only demo-brats-rotation] [--epochs 2]

Each ``demo-*`` manifest names its tiny architecture; this script trains the manifest's task on
``keras_ssl3d.data.synthetic.brats_like_arrays`` (fixed seeds), writes the preset folder to
``keras_ssl3d/zoo/bundled/<name>/`` and pins the weights' sha256 in the manifest. The weights
are reproducible run to run on one machine/library stack; another stack may produce different
bits (hence the pinned hash is refreshed whenever the script runs). The demos exist so examples
and tests work offline; their features are not meant for real images.
"""

import argparse
import json
import tempfile

import numpy as np

from keras_ssl3d.zoo.registry import MANIFEST_DIR, PACKAGE_DIR, load_registry

DEMO_SUBJECTS = 8
DEMO_SHAPE = (40, 40, 40)
DEMO_INPUT_SIZE = 32
DEMO_EPOCHS = 2
DEMO_BATCH_SIZE = 4
# Task settings that fit a 32^3 input and keep the heads tiny (the paper's values need 128^3).
DEMO_TASK_OVERRIDES = {
    "cpc": {"code_size": 32, "embedding_dim": 16},
    "rpl": {"embedding_dim": 16, "hidden_units": 32, "jitter": 1},
    "jigsaw": {"embedding_dim": 16, "hidden_units": 32, "jitter": 1, "num_permutations": 10},
    "rotation": {"hidden_units": 32},
    "exemplar": {"code_size": 32, "hidden_units": 32},
}


def demo_samples(seed=0):
    """Synthetic 4-channel BraTS-like volumes, resized to the demo input size, in [0, 1]."""
    from keras_ssl3d.data.preprocess import resize_volume
    from keras_ssl3d.data.synthetic import brats_like_arrays

    images, _ = brats_like_arrays(n=DEMO_SUBJECTS, shape=DEMO_SHAPE, seed=seed)
    size = (DEMO_INPUT_SIZE,) * 3
    return np.stack([resize_volume(im, size) for im in images]).astype(np.float32)


def build_demo(name, epochs=DEMO_EPOCHS, seed=0, verbose=0):
    """Train and write one demo preset; return ``(folder, weights sha256)``."""
    import dataclasses

    from keras_ssl3d.presets.io import save_preset
    from keras_ssl3d.zoo.build import contract_extra, preset_metadata, train_preset

    entry = load_registry()[name]
    task = entry.recipe["task"]
    recipe = dict(entry.recipe)
    recipe["task_hparams"] = dict(recipe.get("task_hparams", {}), **DEMO_TASK_OVERRIDES.get(task, {}))
    entry = dataclasses.replace(entry, manifest=dict(entry.manifest, recipe=recipe))
    samples = demo_samples(seed)
    with tempfile.TemporaryDirectory(prefix="keras_ssl3d_demo_") as run_dir:
        encoder, record, final = train_preset(entry, samples, epochs=epochs, batch_size=DEMO_BATCH_SIZE,
                                              input_size=DEMO_INPUT_SIZE, run_dir=run_dir, seed=seed,
                                              verbose=verbose)
    bundled = entry.manifest["bundled"]["path"]
    out = (PACKAGE_DIR / bundled).resolve()
    metadata = preset_metadata(entry, record, final, f"keras_ssl3d.data.synthetic.brats_like_arrays(n={DEMO_SUBJECTS}, "
                                                     f"shape={DEMO_SHAPE}, seed={seed})")
    metadata["demo"] = True
    save_preset(encoder, out, metadata=metadata, input_contract_extra=contract_extra(entry))
    sha = json.loads((out / "metadata.json").read_text())["weights_sha256"]
    return out, sha


def pin_bundled_sha(name, sha):
    path = MANIFEST_DIR / f"{name}.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["bundled"]["weights_sha256"] = sha
    from keras_ssl3d.fileio import write_json_atomic

    write_json_atomic(path, manifest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="Build only this demo preset (repeatable).")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.only or [n for n, e in load_registry().items() if e.manifest.get("bundled")]
    for name in names:
        folder, sha = build_demo(name, epochs=args.epochs, seed=args.seed)
        pin_bundled_sha(name, sha)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(json.dumps({"preset": name, "folder": str(folder.relative_to(PACKAGE_DIR.parent.parent)),
                          "bytes": size, "weights_sha256": sha}))


if __name__ == "__main__":
    main()
