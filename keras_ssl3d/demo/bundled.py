"""Build the bundled DEMO presets: tiny encoders pretrained on built-in synthetic BraTS-like data.

    python -m keras_ssl3d.demo.bundled [--only demo-brats-rotation] [--epochs 30]

Each ``demo-*`` manifest names its tiny architecture; this script trains the manifest's task on the
unlabelled pool of ``keras-ssl3d demo --quick`` (``brats_like_arrays`` with the demo's pool seed, size, shape,
widths, pool size and pretraining steps: `keras_ssl3d.demo.runner.DemoConfig`), with the task heads of
``TASKS[task].small_hparams``. The pretext task is scored every epoch on the demo's labelled subjects (another
seed, never trained on); the last epoch's held-out accuracy and its chance level go to the preset's metadata
and the manifest (so the model card says what the encoder learned). The preset folder is written
to ``keras_ssl3d/zoo/bundled/<name>/`` and the weights' sha256 pinned in the manifest. The
weights are reproducible run to run on one machine/library stack; another stack may produce
different bits (hence the pinned hash is refreshed whenever the script runs). Their features are
not meant for real images.
"""

import argparse
import json
import tempfile

import numpy as np

from keras_ssl3d.presets.catalogue import MANIFEST_DIR, PACKAGE_DIR, load_registry

def demo_samples(n, seed):
    """Synthetic 4-channel BraTS-like volumes as the demo pretrains on them: cropped to the foreground, resized."""
    from keras_ssl3d.data.arrays import crop_to_foreground, resize_volume
    from keras_ssl3d.data.synthetic import brats_like_arrays
    from keras_ssl3d.demo.runner import quick_config

    config = quick_config()
    images, _ = brats_like_arrays(n=n, shape=config.shape, seed=seed)
    size = (config.size,) * 3
    crop = config.crop_foreground
    return np.stack([resize_volume(crop_to_foreground(im)[0] if crop else im, size) for im in images]).astype(np.float32)


def build_demo(name, epochs=None, seed=0, verbose=0):
    """Train and write one demo preset; return ``(folder, weights sha256, pretext summary)``."""
    import dataclasses

    from keras_ssl3d.demo.runner import LABELLED_SEED, POOL_SEED, quick_config
    from keras_ssl3d.presets.io import read_metadata
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.zoo.build import train_preset

    entry = load_registry()[name]
    task = entry.recipe["task"]
    recipe = dict(entry.recipe)
    recipe["task_hparams"] = dict(recipe.get("task_hparams", {}), **TASKS[task].small_hparams)
    entry = dataclasses.replace(entry, manifest=dict(entry.manifest, recipe=recipe))
    config = quick_config()
    samples = demo_samples(config.n_unlabelled, seed + POOL_SEED)
    held_out = demo_samples(config.n_labelled, seed + LABELLED_SEED)  # the demo's labelled subjects: never trained on
    epochs = epochs or config.pretrain_epochs()
    out = (PACKAGE_DIR / entry.manifest["bundled"]["path"]).resolve()
    described = (f"keras_ssl3d.data.synthetic.brats_like_arrays(n={config.n_unlabelled}, shape={config.shape}, "
                 f"seed={seed + POOL_SEED}) (the demo's unlabelled pool); held out: the demo's labelled subjects, "
                 f"n={config.n_labelled}, seed={seed + LABELLED_SEED}")
    with tempfile.TemporaryDirectory(prefix="keras_ssl3d_demo_") as run_dir:
        result = train_preset(entry, samples, epochs=epochs, batch_size=config.pretrain_batch_size,
                              input_size=config.size,
                              run_dir=run_dir, preset_dir=out, data_description=described, seed=seed,
                              verbose=verbose, held_out=held_out,
                              metadata=lambda r: {"demo": True, "pretext": r.pretext})
    sha = read_metadata(out)["weights_sha256"]
    return out, sha, result.pretext


def pin_bundled_sha(name, sha, pretext=None):
    """Pin the built weights' hash (and what the pretext task reached) in the manifest."""
    path = MANIFEST_DIR / f"{name}.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["bundled"]["weights_sha256"] = sha
    if pretext is not None:
        manifest["bundled"]["pretext"] = {k: pretext[k] for k in ("held_out_accuracy", "chance_accuracy",
                                                                  "train_accuracy", "epochs")}
    from keras_ssl3d.fileio import write_json_atomic

    write_json_atomic(path, manifest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="Build only this demo preset (repeatable).")
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's pretraining steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.only or [n for n, e in load_registry().items() if e.manifest.get("bundled")]
    for name in names:
        folder, sha, pretext = build_demo(name, epochs=args.epochs, seed=args.seed)
        pin_bundled_sha(name, sha, pretext)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(json.dumps({"preset": name, "folder": str(folder.relative_to(PACKAGE_DIR.parent.parent)),
                          "bytes": size, "weights_sha256": sha, "pretext": pretext}))


if __name__ == "__main__":
    main()
