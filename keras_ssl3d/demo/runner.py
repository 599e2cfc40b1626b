"""The whole job on built-in synthetic data: does self-supervised pretraining help when labels are scarce?

``run_demo(task="exemplar", out="keras-ssl3d-demo")`` (``keras-ssl3d demo``):

1. writes synthetic BraTS-like subjects as real NIfTI files (``OUT/data/train``, ``OUT/data/test``)
   and reads them back through the real readers;
2. pretrains a small encoder with the chosen pretext task(s) on all training subjects, labels unused
   (``OUT/runs/pretrain-<task>/``, a resumable `TrainingRun`; the encoder is a preset folder), and scores
   the pretext task every epoch on the test subjects' images, next to its chance level; ``--quick``
   starts from the bundled ``demo-brats-<task>`` preset instead (download-and-fine-tune);
3. fine-tunes a U-Net on that encoder, and the same architecture from scratch, on several label
   subsets of few labels (and on all labels): same subjects, seeds, recipe and steps for both;
4. evaluates every model on the held-out subjects (whole tumour / tumour core / enhancing Dice), pairs
   each pretrained run with the scratch run on the same subset (mean difference, sd, 95 % bootstrap
   interval, verdict), prints the table and writes ``OUT/report.md``, ``OUT/results.json`` and figures.

Everything reuses the library: `keras_ssl3d.data` (synthetic data, readers, splits),
`keras_ssl3d.tasks.runner.run_pretrain`, the study's `finetune_and_score` and statistics, and its
data-efficiency figure (`keras_ssl3d.demo.report`). The demo's
settings are small on purpose (CPU budget) and differ from the paper's; they are recorded in
``results.json`` and in the report. Numbers are reported as they come out, whatever they are.
"""

import csv
import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from keras_ssl3d.demo.report import (REGION_LABELS, REGIONS, SCRATCH, describe_pretext, example_prediction,
                                     format_report, study_rows, write_figures)
from keras_ssl3d.errors import ConfigError, RunError
from keras_ssl3d.finetune.study import SCRATCH as STUDY_SCRATCH  # the baseline's encoder handle, "none"
from keras_ssl3d.tasks import TASK_NAMES as DEMO_TASKS
from keras_ssl3d.tasks import TASKS
# The demo's task: its pretext learns within the demo's budget on the synthetic data (held-out accuracy
# 1.0, chance 0.5, measured), and it gave the largest transfer in the CPU study of issue 17. Rotation,
# the earlier default, stays at chance there: the synthetic brain is close to a sphere once cropped to
# its foreground, so a quarter turn changes little (README, "The main job in one command").
DEFAULT_TASK = "exemplar"
MARKER = ".keras-ssl3d-demo"
OWNED = ("data", "runs", "figures", "report.md", "results.json")

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of a demo run (see `default_config` / `quick_config`)."""

    n_train: int = 24                   # subjects for pretraining (unlabelled) and fine-tuning
    n_test: int = 8                     # held-out subjects, only for evaluation (and the pretext score)
    shape: tuple = (40, 40, 32)         # voxels of the synthetic NIfTI files
    size: int = 24                      # cube side the volumes are resampled to
    filters: tuple = (8, 16, 32)        # encoder widths (the paper: 32 ... 512 at 128^3)
    norm: str = "batch"
    pretrain_epochs: int = 30
    pretrain_batch_size: int = 4
    pretrain_lr: float = 1e-3           # the paper's 3D pretext learning rate
    fractions: tuple = (0.125, 1.0)     # label fractions of the training subjects
    subsets: int = 5                    # label subsets per fraction below 1 (paired statistics need several)
    encoder_source: str = "pretrain"    # "pretrain" here, or "bundled": start from the demo-brats-<task> preset
    finetune_steps: int = 200           # optimizer steps of every fine-tuning run, whatever its fraction
    finetune_epochs: int = 5            # each epoch passes several times over few labelled subjects
    finetune_batch_size: int = 2
    finetune_lr: float = 3e-3           # the paper's 1e-5 cannot converge in a CPU-minutes demo
    warmup_fraction: float = 0.0        # share of epochs a pretrained encoder stays frozen (paper: warm-up);
                                        # 0: both train everything, only the initialisation differs
    loss: str = "dice_ce"
    augment: str = "flip_intensity"     # training batches: mirroring + intensity (nnU-Net's), same for both

    def check(self):
        if self.n_train < 2 or self.n_test < 1:
            raise ConfigError("the demo needs at least 2 training and 1 test subject")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"label fractions must lie in (0, 1], got {self.fractions}")
        divisor = 2 ** (len(self.filters) - 1)
        if self.size % divisor:
            raise ConfigError(f"size {self.size} must be a multiple of {divisor} for {len(self.filters)} levels")
        if self.subsets < 1:
            raise ConfigError(f"subsets must be >= 1, got {self.subsets}")
        if self.encoder_source not in ("pretrain", "bundled"):
            raise ConfigError(f"encoder_source must be 'pretrain' or 'bundled', got {self.encoder_source!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")


def default_config():
    """``keras-ssl3d demo``: aims at <= 10 minutes on 2 CPU cores for one task (pretraining included)."""
    return DemoConfig()


def quick_config():
    """``keras-ssl3d demo --quick``: aims at <= 2 minutes on 2 CPU cores: the same data, fine-tuned from the
    bundled ``demo-brats-<task>`` preset (no pretraining), few labels only, fewer subsets and steps."""
    return dataclasses.replace(DemoConfig(), encoder_source="bundled", fractions=(0.125,), subsets=3,
                               finetune_steps=120, finetune_epochs=4)


def tiny_config():
    """For tests: seconds, not minutes (the numbers mean nothing)."""
    return DemoConfig(n_train=4, n_test=2, shape=(16, 16, 12), size=16, filters=(4, 8), pretrain_epochs=1,
                      pretrain_batch_size=2, fractions=(0.5, 1.0), finetune_steps=2, finetune_epochs=1)


def _tasks(task):
    task = str(task).lower()
    if task == "all":
        return list(DEMO_TASKS)
    if task not in DEMO_TASKS:
        raise ConfigError(f"unknown demo task {task!r}; choose one of {', '.join(DEMO_TASKS)} or all")
    return [task]


def prepare_output(out, overwrite=False):
    """Make ``out`` ready: new or empty, or a previous demo (whose outputs are replaced with ``overwrite``).

    Anything else is refused, and so is a previous demo's folder holding anything the demo does not write:
    a typo never deletes a user's file.
    """
    from keras_ssl3d.fileio import claim_output_dir, marker_kind

    out = Path(out)
    claim_output_dir(out, marker_kind("demo", OWNED, MARKER), overwrite=overwrite, replace=True,
                     option="--overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by keras-ssl3d demo; its outputs here are replaced by the next demo\n")
    except OSError as e:
        raise RunError(f"cannot write the demo output ({e.strerror or e})", path=e.filename or out) from None
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return out


def make_data(out, config, seed):
    """Synthetic BraTS-like train/test sets as NIfTI files (different seeds: no subject is shared)."""
    from keras_ssl3d.data.synthetic import make_brats_like

    train = make_brats_like(Path(out) / "data" / "train", n_subjects=config.n_train, shape=config.shape, seed=seed)
    test = make_brats_like(Path(out) / "data" / "test", n_subjects=config.n_test, shape=config.shape,
                           seed=seed + 10_000, prefix="BraTS_SynthTest")
    return Path(train), Path(test)


def pretrain_encoder(task, data_dir, run_dir, config, seed, verbose=0, held_out_dir=None):
    """Pretrain a fresh encoder with ``task`` on the unlabelled volumes of ``data_dir``; returns its preset folder.

    ``held_out_dir``: subjects never trained on (the demo's test subjects, their images only) on which the
    pretext loss and accuracy are reported every epoch, so "the task learned" is not a training-set claim.
    """
    from keras_ssl3d.data import ensure_cache, open_cache
    from keras_ssl3d.tasks.runner import PretrainSettings, run_pretrain

    root = Path(run_dir).parent
    samples = open_cache(ensure_cache(data_dir, config.size, crop_foreground=True, root=root))
    held_out = None
    if held_out_dir is not None:
        held_out = open_cache(ensure_cache(held_out_dir, config.size, crop_foreground=True, root=root))
    settings = PretrainSettings(task=task, dims=3, size=config.size, epochs=config.pretrain_epochs,
                                batch_size=config.pretrain_batch_size, lr=config.pretrain_lr,
                                encoder={"filters": tuple(config.filters), "norm": config.norm},
                                task_options=dict(TASKS[task].small_hparams),  # heads for 16^3-32^3 inputs
                                seed=seed)
    result = run_pretrain(samples, settings, run_dir, held_out=held_out, data_path=data_dir, record={"demo": True},
                          metadata=lambda r: {"demo": True, "pretext": r.pretext}, verbose=verbose,
                          command=_command())
    return result.preset_dir, result.rows, result.pretext


def bundled_preset(task, config):
    """The zoo's ``demo-brats-<task>`` handle when ``config`` asks for it and the zoo bundles one, else None.

    Its encoder must have the demo's widths: the scratch baseline is built with ``config.filters``.
    """
    if config.encoder_source != "bundled":
        return None
    from keras_ssl3d.presets.catalogue import load_registry

    name = f"demo-brats-{task}"
    entry = load_registry().get(name)
    if entry is None or not entry.manifest.get("bundled"):
        return None
    filters = tuple(entry.manifest["architecture"]["config"]["filters"])
    if filters != tuple(config.filters):
        raise ConfigError(f"the bundled {name} has widths {filters}, the demo builds {tuple(config.filters)}: "
                          "scratch and pretrained must share the architecture")
    return name


def bundled_pretext(handle):
    """The pretext summary a bundled preset's metadata records (written by ``keras_ssl3d.demo.bundled``)."""
    from keras_ssl3d.presets import resolve_handle
    from keras_ssl3d.presets.io import read_metadata

    metadata = read_metadata(resolve_handle(handle).path)
    summary = dict(metadata.get("pretext") or {})
    summary.setdefault("epochs", (metadata.get("hyperparameters") or {}).get("epochs"))
    return {**summary, "history": [], "encoder": handle, "source": "bundled", "preset": handle}


def compare_to_scratch(runs, tasks):
    """Paired comparison of each task's mean Dice with scratch's on the same label subsets, per fraction."""
    from keras_ssl3d.finetune import statistics

    found = statistics.compare_to_scratch(study_rows(runs))
    return [{"encoder": name, "label_fraction": fraction,  # one subset: no sd or interval (None, not NaN, in JSON)
             **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in dataclasses.asdict(found[(name, fraction)]).items()}}
            for fraction in sorted({r["label_fraction"] for r in runs}) for name in tasks if (name, fraction) in found]


def finetune_plan(n_train, config, seed):
    """``[(fraction, subset, labelled subject indices, repeats)]``: every run gets about ``finetune_steps`` steps.

    Below 100 % labels, ``config.subsets`` label subsets are drawn (subset ``r`` with seed
    ``1000 * seed + r``, the runner's own rule, fixed in code): the same subjects for every encoder, so
    each pretrained run has a scratch run to be compared with. At 100 % there is only one subset.
    Keras ends every epoch with bookkeeping (callbacks, data workers) that costs far more than a step
    of these tiny models, so few labels are not trained with many tiny epochs: each of the
    ``finetune_epochs`` epochs passes ``repeats`` times over the labelled subjects instead.
    """
    from keras_ssl3d.data.splits import label_subset, split_indices

    pool, _ = split_indices(n_train, 0.0, seed)
    plan = []
    per_epoch = config.finetune_steps * config.finetune_batch_size / config.finetune_epochs
    for fraction in config.fractions:
        for subset in range(config.subsets if fraction < 1 else 1):
            labelled = label_subset(pool, fraction, 1000 * seed + subset)
            plan.append((float(fraction), subset, labelled, max(1, int(round(per_epoch / len(labelled))))))
    return plan


def labelled_data(data, indices, repeats):
    """The labelled subjects of a run, each ``repeats`` times (ids suffixed ``#r``), as a `TaskData`."""
    from keras_ssl3d.data.pipeline import SubsetSource

    order = np.repeat(np.asarray(indices), repeats)
    ids = [f"{data.subject_ids[i]}#{r}" for i in indices for r in range(repeats)]
    return dataclasses.replace(data, samples=SubsetSource(data.samples, order), subject_ids=ids)


def finetune_and_evaluate(train_data, test_data, encoder, run_dir, config, seed, verbose=0):
    """One fine-tuning run on ``train_data`` (all of it labelled) with ``encoder`` (a preset folder or
    ``"none"``) and its Dice on ``test_data``."""
    import keras

    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study import finetune_and_score

    scratch = str(encoder) == STUDY_SCRATCH
    epochs = config.finetune_epochs
    warmup = 0 if scratch else int(round(config.warmup_fraction * epochs))
    settings = FinetuneSettings(
        encoder=str(encoder), label_fraction=1.0, strategy="full" if scratch or warmup == 0 else "warmup",
        warmup_epochs=warmup, epochs=epochs, batch_size=config.finetune_batch_size, lr=config.finetune_lr,
        seed=seed, split_seed=seed, val_fraction=0.0, filters=tuple(config.filters) if scratch else None,
        norm=config.norm, loss=config.loss, augment=config.augment,
        checkpoint_every=epochs)  # a demo run is minutes: one checkpoint at its end, no per-epoch cost
    keras.backend.clear_session()
    result, model, metadata, scores = finetune_and_score(train_data, settings, run_dir, test_data, verbose=verbose,
                                                         command=_command())
    return model, metadata, {
        "strategy": settings.strategy,
        "warmup_epochs": warmup,
        "epochs": epochs,
        "steps": epochs * math.ceil(result["train_size"] / config.finetune_batch_size),
        # "mean" is the mean of the three region columns the table shows next to it, so the table cannot
        # contradict itself (the per-class mean Dice, over other sets than WT/TC/ET, could).
        "dice": {**{r: float(scores["regions"][r]) for r in REGIONS},
                 "mean": float(np.mean([scores["regions"][r] for r in REGIONS]))},
        # surface distances in mm (HD95, mean surface distance), each with the mean of its three regions
        **{metric: {**{r: float(scores[metric][r]) for r in REGIONS},
                    "mean": float(np.mean([scores[metric][r] for r in REGIONS]))} for metric in ("hd95", "msd")},
        "per_subject": scores["per_subject"],
        "history": _read_history(Path(run_dir) / "history.csv"),
    }


def run_demo(task=DEFAULT_TASK, out="keras-ssl3d-demo", quick=False, seed=0, config=None, verbose=0, log=None,
             overwrite=False):
    """Run the whole demo into ``out``; returns the results dict (also written to ``out/results.json``).

    Args:
        task: a pretext task name or ``"all"``.
        out: output folder (new, empty, or a previous demo's, which is replaced only with ``overwrite``).
        quick: the ~2-minute configuration instead of the ~10-minute one.
        seed: seeds the data, the label subsets, the initialisations and the batch order.
        config: a `DemoConfig` overriding ``quick``.
        verbose: Keras ``fit`` verbosity.
        log: ``callable(str)`` for progress lines (default: print to stderr).
        overwrite: replace a previous demo's outputs in ``out``.
    """
    from keras_ssl3d.fileio import write_json_atomic, write_text_atomic
    from keras_ssl3d.data.labelled import load_task_data

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    tasks = _tasks(task)
    preset = "custom" if config is not None else ("quick" if quick else "default")
    config = config or (quick_config() if quick else default_config())
    if preset != "custom" and len(tasks) > 1 and any(f < 1 for f in config.fractions):
        # --task all runs every task against the same scratch runs and is meant to stay within ~30 minutes
        # on 2 cores: the few-label fraction only (the question), and at most 4 label subsets.
        config = dataclasses.replace(config, fractions=tuple(f for f in config.fractions if f < 1),
                                     subsets=min(config.subsets, 4))
    config.check()
    seed = int(seed)
    start = time.time()
    out = prepare_output(out, overwrite=overwrite)

    def step(text):
        log(f"[{time.time() - start:6.1f}s] {text}")

    step(f"writing {config.n_train} training + {config.n_test} test synthetic BraTS-like subjects "
         f"({'x'.join(map(str, config.shape))}, 4 modalities) to {out / 'data'}")
    train_dir, test_dir = make_data(out, config, seed)
    caches = out / "runs"  # the pretraining runs cache the same training folder beside it
    train_data = load_task_data(train_dir, size=config.size, task="segmentation", cache_root=caches)
    test_data = load_task_data(test_dir, size=config.size, task="segmentation", cache_root=caches)

    encoders, pretext = {}, {}
    for name in tasks:
        t0 = time.time()
        bundled = bundled_preset(name, config)
        if bundled is not None:
            step(f"using the bundled preset {bundled} (pretrained with {name} by keras_ssl3d/demo/bundled.py)")
            encoders[name], pretext[name] = bundled, bundled_pretext(bundled)
        else:
            step(f"pretraining {name} on {config.n_train} unlabelled subjects ({config.pretrain_epochs} epochs), "
                 f"pretext scored on the {config.n_test} held-out test subjects")
            folder, rows, summary = pretrain_encoder(name, train_dir, out / "runs" / f"pretrain-{name}", config, seed,
                                                     verbose, held_out_dir=test_dir)
            encoders[name] = folder
            pretext[name] = {**summary, "history": rows, "encoder": str(folder.relative_to(out)), "source": "pretrained"}
        pretext[name]["seconds"] = round(time.time() - t0, 1)
        step("  " + describe_pretext(name, pretext[name]))

    plan = finetune_plan(len(train_data), config, seed)
    runs, examples = [], {}
    for fraction, subset, labelled, repeats in plan:
        data = labelled_data(train_data, labelled, repeats)
        for name in [*tasks, SCRATCH]:
            encoder = STUDY_SCRATCH if name == SCRATCH else encoders[name]
            run_dir = out / "runs" / f"finetune-{name}-{_pct(fraction)}-subset{subset}"
            step(f"fine-tuning {'from scratch' if name == SCRATCH else 'the ' + name + ' encoder'} with "
                 f"{len(labelled)}/{len(train_data)} labelled subjects, subset {subset} "
                 f"({config.finetune_epochs} epochs x {repeats} passes)")
            t0 = time.time()
            model, metadata, row = finetune_and_evaluate(data, test_data, encoder, run_dir, config, seed, verbose)
            row.update(encoder=name, label_fraction=fraction, subset=subset, labelled_subjects=int(len(labelled)),
                       labelled_ids=[train_data.subject_ids[i] for i in labelled], passes_per_epoch=repeats,
                       seconds=round(time.time() - t0, 1), run=str(run_dir.relative_to(out)))
            runs.append(row)
            if subset == 0:
                examples[(name, fraction)] = example_prediction(model, metadata, test_data)
            d = row["dice"]
            step("  test Dice " + ", ".join(f"{REGION_LABELS[r]} {d[r]:.3f}" for r in REGIONS))

    results = {
        "task": task,
        "tasks": tasks,
        "seed": seed,
        "quick": bool(quick),
        "preset": preset,
        "config": dataclasses.asdict(config),
        "task_hparams": {name: TASKS[name].small_hparams for name in tasks},
        "data": {"train": str(train_dir.relative_to(out)), "test": str(test_dir.relative_to(out)),
                 "train_subjects": len(train_data), "test_subjects": len(test_data)},
        "pretext": pretext,
        "runs": runs,
        "comparisons": compare_to_scratch(runs, tasks),
    }
    step("writing figures and the report")
    figures = write_figures(out, results, test_data, examples)
    results["figures"] = [str(p.relative_to(out)) for p in figures]
    results["seconds"] = round(time.time() - start, 1)
    results["versions"] = _versions()
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "report.md", format_report(results))
    step(f"done: {out / 'report.md'}")
    return results


def _pct(fraction):
    return f"{100 * fraction:g}pct"


def _read_history(path):
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)})
        return rows


def _command():
    return list(sys.argv)


def _versions():
    from keras_ssl3d.training import environment_versions

    return environment_versions()
