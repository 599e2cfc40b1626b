"""The demo's report: what ran, the pretext scores, and the study's own summary, statistics and figures
(``keras_ssl3d.finetune.study``, ``statistics``, ``convergence``): nothing here computes a comparison."""

import dataclasses
import math

STUDY = "study"  # the study's folder inside the demo's output


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


def study_results(rows, study_dir, speed_fraction=None):
    """The study's runs, probes and paired comparisons (test score, convergence speed, probe against the random
    encoder) as JSON-ready lists, computed by the study's own functions."""
    from pathlib import Path

    from keras_ssl3d.finetune import convergence, statistics
    from keras_ssl3d.finetune.study_probe import PROBES_FILE, RANDOM

    speed_fraction = speed_fraction or convergence.DEFAULT_SPEED_FRACTION
    speeds = convergence.run_speeds(rows, speed_fraction)
    probes_csv = Path(study_dir) / PROBES_FILE
    probes = statistics.read_runs_csv(probes_csv) if probes_csv.is_file() else []
    return {"runs": [_plain(r) for r in rows],
            "comparisons": _listed(statistics.compare_to_scratch(rows)),
            "speed_fraction": speed_fraction,
            "speeds": [_plain(s) for s in speeds],
            "speed_comparisons": _listed(convergence.compare_speeds(speeds)),
            "probes": [_plain(r) for r in probes],
            "probe_comparisons": _listed(statistics.compare_to_scratch(probes, baseline=RANDOM)) if probes else []}


def format_summary(results, out):
    """What the CLI prints: the pretext lines and the study's summary (its tables and verdicts)."""
    from pathlib import Path

    lines = [f"pretext {describe_pretext(name, p)}" for name, p in results["pretext"].items()]
    return "\n".join(lines) + "\n\n" + (Path(out) / STUDY / "summary.md").read_text(encoding="utf-8")


def format_report(results, out):
    """``report.md``: what ran, then the study's summary and figures."""
    c = results["config"]
    tasks = ", ".join(results["tasks"])
    pretrain = (
        "- Pretraining: the bundled `demo-brats-<task>` presets (built by `python -m keras_ssl3d.demo.bundled` "
        "with this configuration and seed 0: the same generator's unlabelled pool; the labelled subjects are "
        "never among them): the package's other promise, download pretrained weights and fine-tune on few labels."
        if c["encoder_source"] == "bundled" else
        f"- Pretraining: the {c['n_unlabelled']} unlabelled subjects (foreground crop: {c['crop_foreground']}), "
        f"about {c['pretrain_steps']} steps of batch {c['pretrain_batch_size']}, Adam lr {c['pretrain_lr']:g}; "
        f"task heads for the small inputs: `{results['task_hparams']}`.")
    lines = [
        "# keras-ssl3d demo report", "",
        f"Pretext task(s): **{tasks}**; seed {results['seed']}; {results['preset']} configuration; "
        f"total {results['seconds']:.0f} s. Everything below the pretext lines is the library's study "
        f"(`keras-ssl3d study`, folder `{STUDY}/`), run on the labelled subjects.", "",
        "## What ran", "",
        f"- Data: {c['n_unlabelled']} unlabelled and {c['n_labelled']} labelled BraTS-like subjects "
        f"({'x'.join(map(str, c['shape']))} voxels, t1/t1ce/t2/flair, labels 0/1/2/4), written as NIfTI by "
        "`keras_ssl3d.data.synthetic.make_brats_like` (the pool from another seed: no subject in both) and read "
        f"back through the BraTS layout reader, resampled to {c['size']}^3. The settings below were chosen by "
        "the transfer diagnosis (`docs/transfer.md`) on other seeds of the generator: these subjects played no "
        "part in that choice.",
        f"- Encoder: `Encoder3D(filters={tuple(c['filters'])}, norm={c['norm']!r})` (the paper: 32...512 at 128^3).",
        pretrain,
        f"- Fine-tuning (the study): {100 * c['test_fraction']:g} % of the labelled subjects held out for the test "
        f"scores, {100 * c['val_fraction']:g} % of the rest for early stopping and best-epoch selection; label "
        f"fractions {list(c['fractions'])} of the remaining pool, {c['subsets']} label subsets (subset r: seed r), "
        "identical for every encoder. U-Net (`Segmenter3D`), Dice + cross-entropy, Adam lr "
        f"{c['finetune_lr']:g}, batch {c['finetune_batch_size']}, {c['steps_per_epoch']} steps per epoch, until "
        f"{c['patience']} epochs without improvement, counted after the first {c['min_epochs']} (at most "
        f"{c['max_epochs']}); augmentation {c['augment']}; "
        f"pretrained encoders: strategy {c['strategy']}; scratch trains fully from the first step.",
        "", "Pretext tasks, scored on subjects they were never trained on:", ""]
    for name, p in results["pretext"].items():
        lines.append(f"- {describe_pretext(name, p)} ({p['seconds']:.0f} s); encoder `{p['encoder']}`")
    summary = format_summary(results, out).split("\n\n", 1)[1]
    lines += ["", summary.replace("# Data-efficiency study", "## The study", 1).replace("\n## ", "\n### "), "",
              "## Figures", "", f"![data efficiency]({STUDY}/data_efficiency.png)", "",
              f"![convergence]({STUDY}/convergence.png)", "",
              "## Reproduce", "", "```", _reproduce(results), "```", "",
              f"Every run folder (`runs/`, `{STUDY}/runs/`) holds `run.json` (command, versions, config) and "
              "`history.csv`; the models are preset folders that `keras-ssl3d evaluate`/`predict` and "
              "`Encoder3D.from_pretrained` accept. These are the numbers this run produced: nothing was selected "
              "or repeated, and the seeds are fixed in the code.", ""]
    return "\n".join(lines)


def _reproduce(results):
    args = ["keras-ssl3d demo", f"--task {results['task']}", f"--seed {results['seed']}"]
    if results["quick"]:
        args.append("--quick")
    return " ".join(args)


def _listed(comparisons):
    """``{(label, fraction): PairedComparison}`` -> JSON rows (None, not NaN, where one subset has no sd)."""
    return [{"encoder": label, "label_fraction": fraction,
             **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in dataclasses.asdict(c).items()}}
            for (label, fraction), c in comparisons.items()]


def _plain(row):
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
