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

Everything reuses the library: `keras_ssl3d.data` (synthetic data, readers), `keras_ssl3d.tasks`,
`keras_ssl3d.training.TrainingRun`, `keras_ssl3d.finetune` (runner, evaluation, metrics). The demo's
settings are small on purpose (CPU budget) and differ from the paper's; they are recorded in
``results.json`` and in the report. Numbers are reported as they come out, whatever they are.
"""

import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError, RunError
from keras_ssl3d.tasks import TASK_NAMES as DEMO_TASKS
from keras_ssl3d.tasks import TASKS
REGIONS = ("whole_tumor", "tumor_core", "enhancing_tumor")
REGION_LABELS = {"whole_tumor": "WT", "tumor_core": "TC", "enhancing_tumor": "ET"}
SCRATCH = "scratch"
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


def prepare_output(out):
    """Make ``out`` ready: new or empty, or a previous demo (whose outputs are replaced).

    Anything else is refused, so that a typo never deletes a user's folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("the demo output is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError("the folder is not empty and holds no previous demo; choose another --out", path=out)
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


def describe_pretext(name, p):
    """One line: ``rotation: held-out accuracy 0.95 (chance 0.10), ...``."""
    if p.get("held_out_accuracy") is not None and p.get("chance_accuracy") is not None:
        text = f"held-out pretext accuracy {p['held_out_accuracy']:.3f} (chance {p['chance_accuracy']:.3f})"
    elif p.get("held_out_loss") is not None:  # restoration tasks: the loss is the measure
        text = f"held-out pretext loss {p['held_out_loss_first']:.4f} (epoch 1) -> {p['held_out_loss']:.4f}"
    else:
        text = "no held-out pretext score"
    if p.get("train_accuracy") is not None:
        text += f", training accuracy {p['train_accuracy']:.3f}"
    where = f"bundled preset {p['preset']}" if p.get("source") == "bundled" else "pretrained here"
    return f"{name}: {text} after {p.get('epochs', '?')} epochs ({where})"


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

    rows = [{"label": r["encoder"], "fraction": r["label_fraction"], "repeat": r["subset"], "score": r["dice"]["mean"]}
            for r in runs]
    found = statistics.compare_to_scratch(rows, baseline=SCRATCH)
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

    from keras_ssl3d.finetune.evaluation import evaluate_model, load_finetuned
    from keras_ssl3d.finetune.runner import FinetuneSettings, run_finetune

    scratch = str(encoder) == "none"
    epochs = config.finetune_epochs
    warmup = 0 if scratch else int(round(config.warmup_fraction * epochs))
    settings = FinetuneSettings(
        encoder=str(encoder), label_fraction=1.0, strategy="full" if scratch or warmup == 0 else "warmup",
        warmup_epochs=warmup, epochs=epochs, batch_size=config.finetune_batch_size, lr=config.finetune_lr,
        seed=seed, split_seed=seed, val_fraction=0.0, filters=tuple(config.filters) if scratch else None,
        norm=config.norm, loss=config.loss, augment=config.augment,
        checkpoint_every=epochs)  # a demo run is minutes: one checkpoint at its end, no per-epoch cost
    keras.backend.clear_session()
    result = run_finetune(train_data, settings, run_dir, verbose=verbose, command=_command())
    model, metadata = load_finetuned(run_dir)
    scores = evaluate_model(model, metadata, test_data)
    return model, metadata, {
        "strategy": settings.strategy,
        "warmup_epochs": warmup,
        "epochs": epochs,
        "steps": epochs * math.ceil(result["train_size"] / config.finetune_batch_size),
        # "mean" is the mean of the three region columns the table shows next to it, so the table cannot
        # contradict itself (the per-class mean Dice, over other sets than WT/TC/ET, could).
        "dice": {**{r: float(scores["regions"][r]) for r in REGIONS},
                 "mean": float(np.mean([scores["regions"][r] for r in REGIONS]))},
        "per_subject": scores["per_subject"],
        "history": _read_history(Path(run_dir) / "history.csv"),
    }


def run_demo(task=DEFAULT_TASK, out="keras-ssl3d-demo", quick=False, seed=0, config=None, verbose=0, log=None):
    """Run the whole demo into ``out``; returns the results dict (also written to ``out/results.json``).

    Args:
        task: a pretext task name or ``"all"``.
        out: output folder (new, empty, or a previous demo's, which is replaced).
        quick: the ~2-minute configuration instead of the ~10-minute one.
        seed: seeds the data, the label subsets, the initialisations and the batch order.
        config: a `DemoConfig` overriding ``quick``.
        verbose: Keras ``fit`` verbosity.
        log: ``callable(str)`` for progress lines (default: print to stderr).
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
    out = prepare_output(out)

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
            encoder = "none" if name == SCRATCH else encoders[name]
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
                examples[(name, fraction)] = _example_prediction(model, metadata, test_data)
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


# -- presentation ------------------------------------------------------------------------------------
def _pct(fraction):
    return f"{100 * fraction:g}pct"


def format_table(results):
    """The demo's table: test Dice per region (mean over label subsets), and each pretrained encoder's
    paired difference to scratch on the same subsets (mean ± sd [95 % bootstrap interval] and verdict)."""
    from keras_ssl3d.finetune.statistics import PairedComparison, format_comparison

    n = results["data"]["train_subjects"]
    header = (f"{'labels':<14}{'encoder':<11}{'subsets':>8}{'WT':>7}{'TC':>7}{'ET':>7}{'mean':>7}{'sd':>7}"
              f"   vs scratch: mean diff ± sd [95% interval]")
    lines = [header, "-" * len(header)]
    comparisons = {(c["encoder"], c["label_fraction"]): c for c in results.get("comparisons", [])}
    for fraction in sorted({r["label_fraction"] for r in results["runs"]}):
        for name in [*results["tasks"], SCRATCH]:
            rows = [r for r in results["runs"] if r["encoder"] == name and r["label_fraction"] == fraction]
            if not rows:
                continue
            means = {k: float(np.mean([r["dice"][k] for r in rows])) for k in (*REGIONS, "mean")}
            sd = float(np.std([r["dice"]["mean"] for r in rows], ddof=1)) if len(rows) > 1 else float("nan")
            label = f"{100 * fraction:.0f}% ({rows[0]['labelled_subjects']}/{n})"
            c = comparisons.get((name, fraction))
            fields = [f.name for f in dataclasses.fields(PairedComparison)]
            gain = "" if c is None else format_comparison(PairedComparison(**{k: c[k] for k in fields}))
            lines.append(f"{label:<14}{name:<11}{len(rows):>8}" + "".join(f"{means[k]:>7.3f}" for k in (*REGIONS, "mean"))
                         + (f"{sd:>7.3f}" if sd == sd else f"{'':>7}") + f"   {gain}")
    lines.append("")
    lines += [f"pretext {describe_pretext(name, p)}" for name, p in results["pretext"].items()]
    return "\n".join(lines)


def format_report(results):
    c = results["config"]
    tasks = ", ".join(results["tasks"])
    lines = [
        "# keras-ssl3d demo report",
        "",
        f"Pretext task(s): **{tasks}**; seed {results['seed']}; "
        f"{results['preset']} configuration; total {results['seconds']:.0f} s.",
        "",
        "Test Dice on held-out synthetic subjects (WT whole tumour, TC tumour core, ET enhancing tumour; "
        "*mean* is the mean of these three columns), averaged over the label subsets (*sd*: their standard "
        "deviation). *vs scratch* pairs every pretrained run with the scratch run on the same labelled subjects "
        "(same seed and number of steps) and gives the mean of the differences in *mean* Dice ± their standard "
        "deviation, a 95 % bootstrap interval over the subsets, and the verdict: *better* or *worse* when the "
        "interval excludes zero, else *not distinguishable*. The test subjects are used for nothing else: "
        "no model selection, every run keeps its last step.",
        "",
        "```",
        format_table(results),
        "```",
        "",
        "These are the numbers this run produced; nothing was selected or repeated, and the seeds are fixed "
        "in the code. With few subsets the interval is wide: three subsets can only call a difference *better* "
        "when all three favour it.",
        "",
        "## What ran",
        "",
        f"- Data: {c['n_train']} training and {c['n_test']} test BraTS-like subjects "
        f"({'x'.join(map(str, c['shape']))} voxels, t1/t1ce/t2/flair, labels 0/1/2/4) written as NIfTI by "
        "`keras_ssl3d.data.synthetic.make_brats_like` (the test set uses another seed) and read back through the "
        f"BraTS layout reader, resampled to {c['size']}^3 and min-max scaled.",
        f"- Encoder: `Encoder3D(filters={tuple(c['filters'])}, norm={c['norm']!r})` (the paper: 32...512 at 128^3).",
        ("- Pretraining: the bundled `demo-brats-<task>` presets (built by `python -m keras_ssl3d.demo.bundled` "
         "from the unlabelled images of 40 subjects of the same generator, seed 0: with --seed 0 this run's "
         "training subjects are among them, its test subjects never): the package's other promise, download "
         "pretrained weights and fine-tune on few labels."
         if c["encoder_source"] == "bundled" else
         f"- Pretraining: all {c['n_train']} training subjects, labels unused (foreground crop as in the paper), "
         f"{c['pretrain_epochs']} epochs, batch {c['pretrain_batch_size']}, Adam lr {c['pretrain_lr']:g}; "
         f"task heads shrunk for the small inputs: `{json.dumps(results['task_hparams'])}`."),
        f"- Fine-tuning: U-Net (`Segmenter3D`), Dice + cross-entropy, Adam lr {c['finetune_lr']:g}, batch "
        f"{c['finetune_batch_size']}, about {c['finetune_steps']} optimizer steps per run whatever the label "
        f"fraction, in {c['finetune_epochs']} epochs (with few labels each epoch passes several times over the "
        "labelled subjects). The paper's lr 1e-5 over hundreds of epochs "
        "cannot converge in a few CPU minutes, hence a larger one. " + (
            f"Pretrained encoders are frozen for the first {100 * c['warmup_fraction']:.0f} % of the epochs (the "
            "paper's warm-up), then trained; the scratch baseline trains everything from the start."
            if c["warmup_fraction"] else
            "Both models train everything from the first step (the paper's encoder warm-up is off: at this budget "
            "it would spend a large share of the few steps on a frozen encoder), so the only difference is the "
            "initialisation.") + f" {c['subsets']} label subsets per fraction below 100 % (subset r: seed 1000 x "
        "seed + r), identical for every encoder.",
        "- Evaluation: sliding-window prediction on the held-out subjects, hard Dice per BraTS region "
        "(a region absent from both prediction and ground truth scores 1).",
        "",
        "## Runs",
        "",
        "| run | encoder | labelled | subset | epochs | steps | strategy | WT | TC | ET | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        d = r["dice"]
        lines.append(f"| `{r['run']}` | {r['encoder']} | {r['labelled_subjects']} | {r['subset']} | {r['epochs']} | "
                     f"{r['steps']} | "
                     f"{r['strategy']}" + (f" ({r['warmup_epochs']} frozen)" if r["strategy"] == "warmup" else "")
                     + f" | {d['whole_tumor']:.3f} | {d['tumor_core']:.3f} | {d['enhancing_tumor']:.3f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Pretext tasks, scored on subjects they were never trained on (this run's test subjects when "
              "pretrained here, the preset's own held-out subjects for a bundled preset):", ""]
    for name, p in results["pretext"].items():
        lines.append(f"- {describe_pretext(name, p)} ({p['seconds']:.0f} s); encoder `{p['encoder']}`")
    lines += ["", "## Figures", ""]
    for fig in results.get("figures", []):
        lines.append(f"![{Path(fig).stem}]({fig})")
        lines.append("")
    lines += ["## Reproduce", "", "```", _reproduce(results), "```", "",
              "Every run folder holds `run.json` (command, versions, config) and `history.csv`; the models are "
              "preset folders (`model/`, `encoder/`) that `keras-ssl3d evaluate`/`predict` and "
              "`Encoder3D.from_pretrained` accept.", ""]
    return "\n".join(lines)


def _reproduce(results):
    args = ["keras-ssl3d demo", f"--task {results['task']}", f"--seed {results['seed']}"]
    if results["quick"]:
        args.append("--quick")
    return " ".join(args)


def write_figures(out, results, test_data, examples):
    """PNG figures (matplotlib's Agg canvas; no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from keras_ssl3d.fileio import atomic_path

    folder = Path(out) / "figures"
    names = [*results["tasks"], SCRATCH]
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    written = []

    def save(fig, name):
        FigureCanvasAgg(fig)
        path = folder / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        written.append(path)

    # 1. Dice vs label fraction (mean ± sd over label subsets), one panel per region and the mean, and
    #    the paired differences to scratch with their 95 % bootstrap intervals.
    panels = (*REGIONS, "mean")
    fig = Figure(figsize=(3.0 * (len(panels) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1)
    fractions = sorted({r["label_fraction"] for r in results["runs"]})
    for ax, region in zip(axes, panels):
        for k, name in enumerate(names):
            x, y, err = [], [], []
            for fraction in fractions:
                values = [r["dice"][region] for r in results["runs"]
                          if r["encoder"] == name and r["label_fraction"] == fraction]
                if values:
                    x.append(100 * fraction * (1 + 0.03 * (k - (len(names) - 1) / 2)))  # side by side
                    y.append(np.mean(values))
                    err.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
            ax.errorbar(x, y, yerr=err, marker="s" if name == SCRATCH else "o", capsize=3, color=colors[name],
                        label=name if name == SCRATCH else f"{name} (pretrained)",
                        linestyle="--" if name == SCRATCH else "-")
        ax.set_title(region.replace("_", " ") + (" Dice (WT, TC, ET)" if region == "mean" else ""))
        ax.set_xlabel("% of training labels")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice (mean ± sd over label subsets)")
    axes[len(panels) - 1].legend(fontsize=7, loc="lower right")
    ax = axes[-1]
    comparisons = results.get("comparisons", [])
    for k, name in enumerate(results["tasks"]):
        rows = [c for c in comparisons if c["encoder"] == name]
        for c in rows:
            x = 100 * c["label_fraction"] * (1 + 0.03 * k)
            low, high = c["low"], c["high"]
            err = [[c["mean"] - low], [high - c["mean"]]] if low is not None else None
            ax.errorbar([x], [c["mean"]], yerr=err, marker="o", capsize=3, color=colors[name],
                        label=name if c is rows[0] else None)
            ax.annotate(c["verdict"].split(" (")[0], (x, c["mean"]), textcoords="offset points", xytext=(5, 3),
                        fontsize=6, color=colors[name])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("pretrained - scratch, mean Dice\n(paired, 95 % bootstrap interval)", fontsize=9)
    ax.set_xlabel("% of training labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for a in axes:
        if len(fractions) > 1 and max(fractions) / min(fractions) >= 4:
            a.set_xscale("log")
        a.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
        a.minorticks_off()
        if len(fractions) == 1:
            a.set_xlim(80 * fractions[0], 120 * fractions[0])
    save(fig, "dice_vs_labels.png")

    # 2. Training curves: pretext loss and fine-tuning loss per run.
    fractions = sorted({r["label_fraction"] for r in results["runs"]})
    fig = Figure(figsize=(4 * (1 + len(fractions)), 3.4))
    axes = fig.subplots(1, 1 + len(fractions))
    for name, p in results["pretext"].items():
        axes[0].plot([h["epoch"] for h in p["history"]], [h.get("loss") for h in p["history"]], marker="o",
                     color=colors[name], label=f"{name} (training)", markersize=3)
        if any("val_loss" in h for h in p["history"]):
            axes[0].plot([h["epoch"] for h in p["history"]], [h.get("val_loss") for h in p["history"]],
                         color=colors[name], linestyle="--", label=f"{name} (held-out)")
        if p.get("chance_loss") is not None:  # a loss at this line means the task has learned nothing yet
            axes[0].axhline(p["chance_loss"], color=colors[name], linestyle=":", linewidth=1,
                            label=f"{name} chance (ln {round(math.exp(p['chance_loss']))})")
    axes[0].set_title("pretext task loss" + ("" if any(p["history"] for p in results["pretext"].values())
                                             else " (bundled presets: see their model cards)"))
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    for ax, fraction in zip(axes[1:], fractions):
        for r in results["runs"]:
            if r["label_fraction"] != fraction:
                continue
            steps_per_epoch = r["steps"] / max(1, r["epochs"])
            ax.plot([h["epoch"] * steps_per_epoch for h in r["history"]], [h.get("loss") for h in r["history"]],
                    color=colors[r["encoder"]], linestyle="--" if r["encoder"] == SCRATCH else "-",
                    marker="s" if r["encoder"] == SCRATCH else "o", markersize=4,
                    label=r["encoder"] if r.get("subset", 0) == 0 else None)
        ax.set_title(f"fine-tuning loss, {100 * fraction:.0f}% labels\n(every label subset)", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=8)
    save(fig, "training_curves.png")

    # 3. One test subject: FLAIR, ground truth and each model's prediction, on the slice with most tumour.
    if examples:
        index, image, truth = _example_subject(test_data)
        z = int(np.argmax((truth > 0).sum(axis=(0, 1))))
        keys = sorted(examples, key=lambda k: (k[1], names.index(k[0])))
        fig = Figure(figsize=(2.2 * (2 + len(keys)), 2.6))
        axes = fig.subplots(1, 2 + len(keys))
        flair = test_data.channel_names.index("flair") if "flair" in test_data.channel_names else 0
        axes[0].imshow(image[:, :, z, flair].T, cmap="gray", origin="lower")
        axes[0].set_title("FLAIR", fontsize=8)
        panels = [("ground truth", truth), *[(f"{k[0]}, {100 * k[1]:.0f}%", examples[k]) for k in keys]]
        vmax = max(1, test_data.num_classes - 1)
        for ax, (title, labels) in zip(axes[1:], panels):
            ax.imshow(labels[:, :, z].T, cmap="viridis", vmin=0, vmax=vmax, origin="lower", interpolation="nearest")
            ax.set_title(title, fontsize=8)
        for ax in axes:
            ax.set_axis_off()
        fig.legend(handles=_class_legend(test_data, vmax), loc="lower center", ncol=test_data.num_classes,
                   fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.08))
        fig.suptitle(f"test subject {test_data.subject_ids[index]}, axial slice {z}", fontsize=9)
        save(fig, "example_segmentation.png")
    return written


def _class_legend(test_data, vmax):
    """One colour patch per class, in the colours the label panels use (viridis over 0..vmax)."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    names = list(test_data.class_names or range(test_data.num_classes))
    return [Patch(color=colormaps["viridis"](i / vmax), label=str(name)) for i, name in enumerate(names)]


def _example_subject(test_data):
    index = 0
    return index, np.asarray(test_data.samples.image(index)), np.asarray(test_data.samples.label(index))


def _example_prediction(model, metadata, test_data):
    from keras_ssl3d.finetune.inference import predict_labels

    index, image, _ = _example_subject(test_data)
    size = int(metadata["input_size"][0])
    return predict_labels(model, image, window=(size,) * 3)


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
