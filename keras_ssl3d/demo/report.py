"""The demo's report: its table, ``report.md`` and figures (the data-efficiency figure is the study's,
``keras_ssl3d.finetune.study.plot_data_efficiency``; the statistics are ``keras_ssl3d.finetune.statistics``)."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from keras_ssl3d.finetune.statistics import BASELINE as SCRATCH  # the baseline's name, as in the study

REGIONS = ("whole_tumor", "tumor_core", "enhancing_tumor")
REGION_LABELS = {"whole_tumor": "WT", "tumor_core": "TC", "enhancing_tumor": "ET"}


def study_rows(runs):
    """The demo's runs as the study's rows (label, fraction, repeat, score: the mean Dice, strategy)."""
    return [{"label": r["encoder"], "fraction": r["label_fraction"], "repeat": r["subset"], "score": r["dice"]["mean"],
             "strategy": r.get("strategy")} for r in runs]


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
        "(a region absent from both prediction and ground truth scores 1) and the 95th-percentile Hausdorff "
        "distance (HD95, mm, from the NIfTI voxel spacing; 0 when both are empty, the volume's diagonal when "
        "only one is: the BraTS convention).",
        "",
        "## Runs",
        "",
        "| run | encoder | labelled | subset | epochs | steps | strategy | WT | TC | ET | HD95 WT | TC | ET (mm) "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        d = r["dice"]
        lines.append(f"| `{r['run']}` | {r['encoder']} | {r['labelled_subjects']} | {r['subset']} | {r['epochs']} | "
                     f"{r['steps']} | "
                     f"{r['strategy']}" + (f" ({r['warmup_epochs']} frozen)" if r["strategy"] == "warmup" else "")
                     + f" | {d['whole_tumor']:.3f} | {d['tumor_core']:.3f} | {d['enhancing_tumor']:.3f} | "
                     + "".join(f"{h:.1f} | " for h in _hd95_cells(r)) + f"{r['seconds']:.0f} |")
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


def _hd95_cells(run):
    """HD95 per region (mm) of a run; nan for results.json files written before HD95 was reported."""
    hd = run.get("hd95") or {}
    return [float(hd.get(region, float("nan"))) for region in REGIONS]


def _reproduce(results):
    args = ["keras-ssl3d demo", f"--task {results['task']}", f"--seed {results['seed']}"]
    if results["quick"]:
        args.append("--quick")
    return " ".join(args)


def write_figures(out, results, test_data, examples):
    """PNG figures: the study's data-efficiency figure, then training curves and an example segmentation
    (matplotlib's Agg canvas)."""
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

    # 1. Mean Dice vs label fraction (mean ± sd over label subsets) and the paired difference to scratch
    #    with its 95 % bootstrap interval: the study's figure.
    from keras_ssl3d.finetune.study import plot_data_efficiency

    path = folder / "dice_vs_labels.png"
    plot_data_efficiency(path, study_rows(results["runs"]), "mean_dice")
    written.append(path)

    # 2. Training curves: pretext loss and fine-tuning loss per run.
    fractions = sorted({r["label_fraction"] for r in results["runs"]})
    fig = Figure(figsize=(4 * (1 + len(fractions)), 3.4))
    axes = fig.subplots(1, 1 + len(fractions))
    for name, p in results["pretext"].items():
        if p["history"]:
            axes[0].plot([h["epoch"] for h in p["history"]], [h.get("loss") for h in p["history"]], marker="o",
                         color=colors[name], label=f"{name} (training)", markersize=3)
        if not p["history"] and p.get("held_out_loss_first") is not None and p.get("epochs"):
            # a bundled preset records its held-out loss at the first and last epoch only (no history)
            axes[0].plot([1, p["epochs"]], [p["held_out_loss_first"], p["held_out_loss"]], color=colors[name],
                         linestyle="--", marker="o", markersize=3, label=f"{name} (held-out, first/last epoch)")
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


def example_prediction(model, metadata, test_data):
    """The predicted label map of the first test subject (the example figure)."""
    from keras_ssl3d.finetune.inference import predict_labels

    index, image, _ = _example_subject(test_data)
    size = int(metadata["input_size"][0])
    return predict_labels(model, image, window=(size,) * 3)
