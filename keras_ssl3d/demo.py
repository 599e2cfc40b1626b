"""The whole job on built-in synthetic data: does self-supervised pretraining help when labels are scarce?

``run_demo(task="rotation", out="keras-ssl3d-demo")`` (``keras-ssl3d demo``):

1. writes synthetic BraTS-like subjects as real NIfTI files (``OUT/data/train``, ``OUT/data/test``)
   and reads them back through the real readers;
2. pretrains a small encoder with the chosen pretext task(s) on all training subjects, labels unused
   (``OUT/runs/pretrain-<task>/``, a resumable `TrainingRun`; the encoder is a preset folder);
3. fine-tunes a U-Net on that encoder, and the same architecture from scratch, with few labels and with
   all labels (same label subsets, seeds and number of optimizer steps for both);
4. evaluates every model on held-out subjects (whole tumour / tumour core / enhancing Dice), prints a
   table and writes ``OUT/report.md``, ``OUT/results.json`` and PNG figures.

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
from keras_ssl3d.tasks import TASKS, make_task
REGIONS = ("whole_tumor", "tumor_core", "enhancing_tumor")
REGION_LABELS = {"whole_tumor": "WT", "tumor_core": "TC", "enhancing_tumor": "ET"}
SCRATCH = "scratch"
MARKER = ".keras-ssl3d-demo"
OWNED = ("data", "runs", "figures", "report.md", "results.json")

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of a demo run (see `default_config` / `quick_config`)."""

    n_train: int = 16                   # subjects for pretraining (unlabelled) and fine-tuning
    n_test: int = 6                     # held-out subjects, only for evaluation
    shape: tuple = (40, 40, 32)         # voxels of the synthetic NIfTI files
    size: int = 24                      # cube side the volumes are resampled to
    filters: tuple = (8, 16, 32)        # encoder widths (the paper: 32 ... 512 at 128^3)
    norm: str = "batch"
    pretrain_epochs: int = 15
    pretrain_batch_size: int = 4
    pretrain_lr: float = 1e-3           # the paper's 3D pretext learning rate
    fractions: tuple = (0.125, 1.0)     # label fractions of the training subjects
    finetune_steps: int = 120           # optimizer steps of every fine-tuning run, whatever its fraction
    finetune_epochs: int = 6            # each epoch passes several times over few labelled subjects
    finetune_batch_size: int = 2
    finetune_lr: float = 3e-3           # the paper's 1e-5 cannot converge in a CPU-minutes demo
    warmup_fraction: float = 0.0        # share of epochs a pretrained encoder stays frozen (paper: warm-up);
                                        # 0: both train everything, only the initialisation differs
    loss: str = "dice_ce"

    def check(self):
        if self.n_train < 2 or self.n_test < 1:
            raise ConfigError("the demo needs at least 2 training and 1 test subject")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"label fractions must lie in (0, 1], got {self.fractions}")
        divisor = 2 ** (len(self.filters) - 1)
        if self.size % divisor:
            raise ConfigError(f"size {self.size} must be a multiple of {divisor} for {len(self.filters)} levels")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")


def default_config():
    """``keras-ssl3d demo``: aims at <= 10 minutes on 2 CPU cores for one task."""
    return DemoConfig()


def quick_config():
    """``keras-ssl3d demo --quick``: aims at about 2 minutes on 2 CPU cores (16^3: enhancing tumour is a few voxels)."""
    return DemoConfig(n_train=12, n_test=4, shape=(32, 32, 24), size=16, filters=(8, 16, 32), pretrain_epochs=6,
                      fractions=(0.25, 1.0), finetune_steps=40, finetune_epochs=2)


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


def pretrain_encoder(task, data_dir, run_dir, config, seed, verbose=0):
    """Pretrain a fresh encoder with ``task`` on the unlabelled volumes of ``data_dir``; returns its preset folder."""
    import keras

    from keras_ssl3d.data import ensure_cache, open_cache
    from keras_ssl3d.models import Encoder3D
    from keras_ssl3d.training import TrainingRun

    samples = open_cache(ensure_cache(data_dir, config.size, crop_foreground=True, root=Path(run_dir).parent))
    keras.utils.set_random_seed(seed)
    encoder = Encoder3D(in_channels=samples.num_channels, filters=tuple(config.filters), norm=config.norm)
    hparams = dict(TASKS[task].small_hparams)  # heads small enough for 16^3-32^3 inputs and tiny encoders
    model = make_task(task, encoder, input_size=config.size, **hparams)
    if TASKS[task].takes_input_size:
        hparams["input_size"] = config.size
    model.compile(learning_rate=config.pretrain_lr)
    batch_size = min(config.pretrain_batch_size, len(samples))
    run_config = {"task": task, "size": config.size, "filters": list(config.filters), "norm": config.norm,
                  "epochs": config.pretrain_epochs, "batch_size": batch_size, "learning_rate": config.pretrain_lr,
                  "task_hparams": hparams, "num_samples": int(len(samples)), "data": str(data_dir), "demo": True}
    run = TrainingRun(run_dir, config=run_config, seed=seed, command=_command())
    history = run.fit(model, x=model.dataset(samples, batch_size=batch_size, seed=seed),
                      epochs=config.pretrain_epochs, verbose=verbose, shuffle=False)
    folder = Path(run_dir) / "encoder"
    model.pretrained_model().save_pretrained(folder, metadata={"task": task, "hyperparameters": run_config,
                                                                "demo": True})
    return folder, list(history.rows), model.chance_loss


def finetune_plan(n_train, config, seed):
    """``[(fraction, labelled subject indices, repeats)]``: every run gets about ``finetune_steps`` steps.

    Keras ends every epoch with bookkeeping (checkpoint, callbacks, data workers) that costs far more
    than a step of these tiny models, so few labels are not trained with many tiny epochs: each of the
    ``finetune_epochs`` epochs passes ``repeats`` times over the labelled subjects instead.
    """
    from keras_ssl3d.finetune.runner import label_subset, split_indices

    pool, _ = split_indices(n_train, 0.0, seed)
    plan = []
    per_epoch = config.finetune_steps * config.finetune_batch_size / config.finetune_epochs
    for fraction in config.fractions:
        labelled = label_subset(pool, fraction, seed)  # the runner's own rule: same subjects for every encoder
        plan.append((float(fraction), labelled, max(1, int(round(per_epoch / len(labelled))))))
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
        norm=config.norm, loss=config.loss)
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


def run_demo(task="rotation", out="keras-ssl3d-demo", quick=False, seed=0, config=None, verbose=0, log=None):
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
    from keras_ssl3d.finetune.runner import load_task_data

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    tasks = _tasks(task)
    preset = "custom" if config is not None else ("quick" if quick else "default")
    config = config or (quick_config() if quick else default_config())
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
        step(f"pretraining {name} on {config.n_train} unlabelled subjects ({config.pretrain_epochs} epochs)")
        t0 = time.time()
        folder, rows, chance = pretrain_encoder(name, train_dir, out / "runs" / f"pretrain-{name}", config, seed,
                                                verbose)
        encoders[name] = folder
        pretext[name] = {"history": rows, "seconds": round(time.time() - t0, 1),
                         "encoder": str(folder.relative_to(out)), "chance_loss": chance}
        last = rows[-1] if rows else {}
        step("  pretext " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "epoch"))

    plan = finetune_plan(len(train_data), config, seed)
    runs, examples = [], {}
    for fraction, labelled, repeats in plan:
        subset = labelled_data(train_data, labelled, repeats)
        for name in [*tasks, SCRATCH]:
            encoder = "none" if name == SCRATCH else encoders[name]
            run_dir = out / "runs" / f"finetune-{name}-{_pct(fraction)}"
            step(f"fine-tuning {'from scratch' if name == SCRATCH else 'the ' + name + ' encoder'} with "
                 f"{len(labelled)}/{len(train_data)} labelled subjects ({config.finetune_epochs} epochs x "
                 f"{repeats} passes)")
            t0 = time.time()
            model, metadata, row = finetune_and_evaluate(subset, test_data, encoder, run_dir, config, seed, verbose)
            row.update(encoder=name, label_fraction=fraction, labelled_subjects=int(len(labelled)),
                       labelled_ids=[train_data.subject_ids[i] for i in labelled], passes_per_epoch=repeats,
                       seconds=round(time.time() - t0, 1), run=str(run_dir.relative_to(out)))
            runs.append(row)
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
    """The demo's table: test Dice per region, pretrained vs scratch, for each label fraction."""
    n = results["data"]["train_subjects"]
    header = f"{'labels':<14}{'encoder':<12}{'WT':>7}{'TC':>7}{'ET':>7}{'mean':>7}{'vs scratch':>12}"
    lines = [header, "-" * len(header)]
    by_key = {(r["encoder"], r["label_fraction"]): r for r in results["runs"]}
    for fraction in sorted({r["label_fraction"] for r in results["runs"]}):
        scratch = by_key.get((SCRATCH, fraction))
        for name in [*results["tasks"], SCRATCH]:
            row = by_key.get((name, fraction))
            if row is None:
                continue
            d = row["dice"]
            label = f"{100 * fraction:.0f}% ({row['labelled_subjects']}/{n})"
            gain = "" if name == SCRATCH or scratch is None else f"{d['mean'] - scratch['dice']['mean']:+.3f}"
            lines.append(f"{label:<14}{name:<12}" + "".join(f"{d[k]:>7.3f}" for k in (*REGIONS, "mean")) + f"{gain:>12}")
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
        "*mean* is the mean of these three columns); *vs scratch* is the difference in that mean "
        "against the same U-Net trained from random initialisation with the same labelled subjects, "
        "seed and number of steps.",
        "",
        "```",
        format_table(results),
        "```",
        "",
        "These are the numbers this run produced; nothing was selected or repeated. With so few steps and "
        "subjects they vary with the seed: read them as a demonstration of the workflow, not as a benchmark.",
        "",
        "## What ran",
        "",
        f"- Data: {c['n_train']} training and {c['n_test']} test BraTS-like subjects "
        f"({'x'.join(map(str, c['shape']))} voxels, t1/t1ce/t2/flair, labels 0/1/2/4) written as NIfTI by "
        "`keras_ssl3d.data.synthetic.make_brats_like` (the test set uses another seed) and read back through the "
        f"BraTS layout reader, resampled to {c['size']}^3 and min-max scaled.",
        f"- Encoder: `Encoder3D(filters={tuple(c['filters'])}, norm={c['norm']!r})` (the paper: 32...512 at 128^3).",
        f"- Pretraining: all {c['n_train']} training subjects, labels unused (foreground crop as in the paper), "
        f"{c['pretrain_epochs']} epochs, batch {c['pretrain_batch_size']}, Adam lr {c['pretrain_lr']:g} "
        f"(the paper's); task heads shrunk for the small inputs: `{json.dumps(results['task_hparams'])}`.",
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
            "initialisation.") + " Label subsets are chosen by seed and identical for both.",
        "- Evaluation: sliding-window prediction on the held-out subjects, hard Dice per BraTS region "
        "(a region absent from both prediction and ground truth scores 1).",
        "",
        "## Runs",
        "",
        "| run | encoder | labelled | epochs | steps | strategy | WT | TC | ET | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        d = r["dice"]
        lines.append(f"| `{r['run']}` | {r['encoder']} | {r['labelled_subjects']} | {r['epochs']} | {r['steps']} | "
                     f"{r['strategy']}" + (f" ({r['warmup_epochs']} frozen)" if r["strategy"] == "warmup" else "")
                     + f" | {d['whole_tumor']:.3f} | {d['tumor_core']:.3f} | {d['enhancing_tumor']:.3f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Pretext training (last epoch):", ""]
    for name, p in results["pretext"].items():
        last = p["history"][-1] if p["history"] else {}
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "epoch")
        lines.append(f"- {name}: {metrics} ({p['seconds']:.0f} s); encoder preset `{p['encoder']}`")
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

    # 1. Dice vs label fraction, one panel per region.
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, len(REGIONS), sharey=True)
    for ax, region in zip(axes, REGIONS):
        for name in names:
            rows = sorted((r for r in results["runs"] if r["encoder"] == name), key=lambda r: r["label_fraction"])
            ax.plot([100 * r["label_fraction"] for r in rows], [r["dice"][region] for r in rows], marker="o",
                    color=colors[name], label=name if name == SCRATCH else f"{name} (pretrained)",
                    linestyle="--" if name == SCRATCH else "-")
        ax.set_title(region.replace("_", " "))
        ax.set_xlabel("% of training labels")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice")
    axes[-1].legend(fontsize=8, loc="lower right")
    save(fig, "dice_vs_labels.png")

    # 2. Training curves: pretext loss and fine-tuning loss per run.
    fractions = sorted({r["label_fraction"] for r in results["runs"]})
    fig = Figure(figsize=(4 * (1 + len(fractions)), 3.4))
    axes = fig.subplots(1, 1 + len(fractions))
    for name, p in results["pretext"].items():
        axes[0].plot([h["epoch"] for h in p["history"]], [h.get("loss") for h in p["history"]], marker="o",
                     color=colors[name], label=name)
        if p.get("chance_loss") is not None:  # a loss at this line means the task has learned nothing yet
            axes[0].axhline(p["chance_loss"], color=colors[name], linestyle=":", linewidth=1,
                            label=f"{name} chance (ln {round(math.exp(p['chance_loss']))})")
    axes[0].set_title("pretext task loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    for ax, fraction in zip(axes[1:], fractions):
        for r in results["runs"]:
            if r["label_fraction"] != fraction:
                continue
            steps_per_epoch = r["steps"] / max(1, r["epochs"])
            ax.plot([h["epoch"] * steps_per_epoch for h in r["history"]], [h.get("loss") for h in r["history"]],
                    color=colors[r["encoder"]], linestyle="--" if r["encoder"] == SCRATCH else "-",
                    marker="s" if r["encoder"] == SCRATCH else "o", markersize=4, label=r["encoder"])
        ax.set_title(f"fine-tuning loss, {100 * fraction:.0f}% labels")
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
