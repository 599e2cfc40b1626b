"""Data-efficiency and convergence studies: pretrained encoders vs training from scratch.

For every encoder (the scratch baseline ``none`` always included), label fraction and repeat,
one fine-tuning run is trained. Repeat ``r`` uses seed ``r`` for the label subset, so the
subsets are identical across encoders (and nested across fractions). ``split_seed`` alone fixes
the held-out test subjects (``test_fraction``) and then the validation subjects, for the whole
study: runs train on label subsets of the rest, pick their best validation epoch, and are scored
on the test subjects, which no run trains or selects on. The scratch baseline always trains
fully from the first step (strategy ``full``, the paper's baseline): a frozen random encoder in a
warm-up would handicap it. Finished runs (``result.json``) are reused, so an interrupted study
continues where it stopped.

Outputs (all written atomically, refreshed after every run): ``runs.csv`` (one row per run),
``data_efficiency.png`` (test score vs % of labels, mean ± sd over label subsets; and the paired
difference to scratch with its 95 % bootstrap interval, see `keras_ssl3d.finetune.statistics`),
``convergence.png`` (validation score vs epoch) and ``summary.md`` (both as tables, with verdicts); with a
frozen-encoder probe (``--probe-epochs``, `keras_ssl3d.finetune.study_probe`) also ``probes.csv``.
"""

import contextlib
import json
import re
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.fileio import OutputKind, atomic_path, claim_output_dir, write_text_atomic
from keras_ssl3d.finetune.convergence import DEFAULT_SPEED_FRACTION, at_maximum_note, speed_markdown
from keras_ssl3d.finetune.runs_table import RUNS_FILE, write_runs_csv
from keras_ssl3d.finetune.runs_table import run_row as _row
from keras_ssl3d.finetune.statistics import compare_to_scratch, format_comparison
from keras_ssl3d.finetune.study_probe import StudyProbes, probe_markdown
from keras_ssl3d.finetune.study_reuse import check_reused, label_pool_size, study_test_subjects
from keras_ssl3d.finetune.study_run import train_study_run

SCRATCH = "none"
# The baseline's strategy whatever --strategy says for pretrained encoders: everything trains from step one.
SCRATCH_STRATEGY = "full"
# A study folder: its runs/ (or runs.csv) says so; the package writes only these names in it.
STUDY_FILES = frozenset(("runs", RUNS_FILE, "summary.md", "data_efficiency.png", "convergence.png", "probes",
                         "probes.csv"))
STUDY_OUTPUT = OutputKind("study", STUDY_FILES, lambda folder: (Path(folder) / "runs").is_dir()
                          or (Path(folder) / RUNS_FILE).is_file())


LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Folder names `pretrain` / `finetune` give the preset inside a run: the run folder names it better.
GENERIC_NAMES = ("encoder", "model")


def split_encoder_spec(spec):
    """``"name=handle"`` -> ``("name", "handle")``; a bare handle gets `encoder_label`'s name."""
    text = str(spec).strip()
    name, sep, handle = text.partition("=")
    if sep and LABEL_RE.match(name.strip()):
        name, handle = name.strip(), handle.strip()
        if not handle:
            raise ConfigError(f"--encoders: {text!r} names no encoder after '='")
        if name == "scratch":
            raise ConfigError(f"--encoders: the name 'scratch' is the baseline's, got {text!r}")
        return name, handle
    return encoder_label(text), text


def encoder_label(handle):
    """A short name for an encoder: ``none`` -> scratch; ``RUN/encoder`` -> RUN; else the last part."""
    if handle == SCRATCH:
        return "scratch"
    path = Path(str(handle).rstrip("/\\"))
    if path.name.lower() in GENERIC_NAMES and path.parent.name:
        path = path.parent
    return path.name or str(handle)


def run_study(data, encoders, fractions, repeats, settings, out, verbose=0, log=print, workers=1, plan=None,
              speed_fraction=DEFAULT_SPEED_FRACTION, probe=None, parallel_runs=1):
    """Run (or resume) the study on ``data`` (a `TaskData`); returns the list of run rows.

    ``speed_fraction``: the convergence-speed target (see `keras_ssl3d.finetune.convergence`). ``probe``: a
    `ProbeSettings` (its epochs, lr, batch size, loss) to probe every encoder after each label subset's runs
    (`keras_ssl3d.finetune.study_probe`: OUT/probes.csv and the summary's probe section), or None.
    ``parallel_runs``: runs trained at once in separate processes (`keras_ssl3d.finetune.study_pool`)."""
    from keras_ssl3d.finetune.runner import RESULT_FILE
    from keras_ssl3d.finetune.study_pool import RunPool, check_parallel_runs
    from keras_ssl3d.finetune.warmup import warmup_note

    out = Path(out)
    claim_output_dir(out, STUDY_OUTPUT)  # new, empty or an earlier study (resumed): never the user's folder
    note = warmup_note(data.task, settings, pretrained=True)
    if note and any(e != SCRATCH for e in encoders):
        log(note)
    settings = settings.resolved(data.task)
    specs = [("scratch", SCRATCH)] + [split_encoder_spec(e) for e in encoders if e != SCRATCH]
    labels = [label for label, _ in specs]
    encoders = [handle for _, handle in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"encoders must have distinct names, got {labels}; name them with "
                          "--encoders NAME=PATH,OTHER=PATH")
    unsafe = [label for label in labels if not LABEL_RE.match(label)]
    if unsafe:
        raise ConfigError(f"encoder names become folder names; {unsafe} are not usable: name them with "
                          "--encoders NAME=PATH (letters, digits, '.', '_', '-')")
    if int(repeats) < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    check_parallel_runs(parallel_runs, plan)
    if not 0.0 < float(settings.test_fraction) < 1.0:
        raise ConfigError(f"a study scores on held-out test subjects: --test-fraction must be in (0, 1), "
                          f"got {settings.test_fraction}")
    probes = None if probe is None else StudyProbes(data, out, settings, probe, specs, log)
    test_subjects = study_test_subjects(data, settings)
    pool_size = label_pool_size(data, settings)
    rows = []
    runs = [(fraction, repeat, handle, label, out / "runs" / label / f"fraction_{fraction:g}" / f"repeat_{repeat}")
            for fraction in fractions for repeat in range(int(repeats)) for handle, label in zip(encoders, labels)]
    finished = {run_dir for *_, run_dir in runs if (run_dir / RESULT_FILE).is_file()}

    def run_settings(fraction, repeat, handle):
        strategy = SCRATCH_STRATEGY if handle == SCRATCH else settings.strategy
        return _replace(settings, encoder=handle, label_fraction=float(fraction), seed=repeat, strategy=strategy)

    stale = False
    jobs = [(run_dir, run_settings(fraction, repeat, handle))
            for fraction, repeat, handle, label, run_dir in runs if run_dir not in finished]  # in reading order
    parallel = parallel_runs > 1 and jobs
    with RunPool(parallel_runs, data, jobs, verbose, workers) if parallel else contextlib.nullcontext() as pool:
        for done, (fraction, repeat, handle, label, run_dir) in enumerate(runs, 1):
            result_path = run_dir / RESULT_FILE
            s = run_settings(fraction, repeat, handle)
            reused = run_dir in finished
            if reused:
                result = json.loads(result_path.read_text(encoding="utf-8"))
                check_reused(result_path, result, test_subjects, s.strategy, settings, handle == SCRATCH)
                log(f"[{done}/{len(runs)}] {label} {fraction:g} repeat {repeat}: reusing {run_dir}")
            elif pool is not None:
                result = pool.result(run_dir)
                log(f"[{done}/{len(runs)}] {label}, {fraction:g} of the labels, repeat {repeat}: trained in "
                    f"{result['wall_s']:.0f} s (parallel runs)")
            else:
                log(f"[{done}/{len(runs)}] {label}, {fraction:g} of the labels, repeat {repeat}")
                result = train_study_run(data, s, run_dir, verbose, workers, plan)
            rows.append(_row(label, handle, fraction, repeat, result, result.get("wall_s"), run_dir, pool_size))
            write_runs_csv(out / RUNS_FILE, rows)
            stale = stale or reused
            if label != labels[-1]:
                continue
            # After each label subset: its probes, then figures and summary (an interrupted study still shows
            # what it has); a subset whose runs and probes were all reused is drawn once, at the end.
            subset_runs = [r["run_dir"] for r in rows[-len(labels):]]
            probed = probes.after_subset(fraction, repeat, subset_runs[0], subset_runs) if probes else False
            if probed or not all(d in finished for *_, d in runs[done - len(labels):done]):
                write_outputs(out, rows, _curves(out, rows), data.task, settings, speed_fraction, probes)
                stale = False
    if stale:
        write_outputs(out, rows, _curves(out, rows), data.task, settings, speed_fraction, probes)
    return rows


def _replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)


def _curves(out, rows):
    """``{(label, fraction): [curve per repeat]}`` of validation scores per epoch."""
    curves = {}
    for row in rows:
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text(encoding="utf-8"))
        curve = [np.nan if v is None else float(v) for v in result.get("curve") or []]
        curves.setdefault((row["label"], row["fraction"]), []).append(curve)
    return curves


def _by_label(rows):
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    return labels, fractions


def _scores(rows, label, fraction, column="score"):
    return np.array([r[column] for r in rows if r["label"] == label and r["fraction"] == fraction
                     and r.get(column) is not None], dtype=float)


def _style(label, i):
    if label == "scratch":
        return {"color": "tab:orange", "linestyle": "--", "marker": "s"}
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:cyan", "tab:olive"]
    return {"color": colors[i % len(colors)], "linestyle": "-", "marker": "o"}


def _mean_sd(scores):
    """Mean and sample sd (ddof=1; nan for one subset) of the scores of one encoder at one fraction."""
    if not scores.size:
        return np.nan, np.nan
    return float(scores.mean()), float(scores.std(ddof=1)) if scores.size > 1 else np.nan


def plot_data_efficiency(path, rows, score_name):
    """Left: test score vs % of labels (mean ± sd over subsets, each run a dot). Right: the paired
    difference to scratch per fraction with its 95 % bootstrap interval, and the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, fractions = _by_label(rows)
    comparisons = compare_to_scratch(rows)
    fig, (ax, diff_ax) = plt.subplots(1, 2, figsize=(12.0, 4.6))
    x = np.array(fractions) * 100
    for i, label in enumerate(labels):
        style = _style(label, i)
        stats = [_mean_sd(_scores(rows, label, f)) for f in fractions]
        for f in fractions:
            s = _scores(rows, label, f)
            ax.scatter(np.full(s.size, f * 100), s, color=style["color"], alpha=0.35, s=12)
        ax.errorbar(x, [m for m, _ in stats], yerr=[0 if np.isnan(sd) else sd for _, sd in stats],
                    label=f"{label} ({_strategies(rows, label)})", capsize=3, **style)
    pretrained = [label for label in labels if label != "scratch"]
    for i, label in enumerate(pretrained):
        style = _style(label, labels.index(label))
        # a small offset per encoder so that bars at one fraction do not hide each other
        shift = 1.0 + 0.04 * (i - (len(pretrained) - 1) / 2)
        points = [(f * 100 * shift, comparisons[(label, f)]) for f in fractions if (label, f) in comparisons]
        if not points:
            continue
        xs = np.array([p for p, _ in points])
        means = np.array([c.mean for _, c in points])
        err = np.array([[0.0, 0.0] if c.n < 2 else [c.mean - c.low, c.high - c.mean] for _, c in points]).T
        diff_ax.errorbar(xs, means, yerr=err, label=label, capsize=3, color=style["color"], marker="o",
                         linestyle=":", linewidth=1)
        for px, c in points:  # one line of words per encoder, stacked so that they do not overlap
            diff_ax.annotate(c.verdict.replace(" (one subset)", " (n=1)"), (px, c.mean), textcoords="offset points",
                             xytext=(5, 4 + 10 * i), fontsize=7, color=style["color"])
    diff_ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"test {_score_title(score_name)}")
    ax.set_title("Test score (mean ± sd over label subsets)")
    diff_ax.set_ylabel("pretrained - scratch")
    diff_ax.set_title("Paired difference to scratch (mean, 95% bootstrap interval)")
    for a in (ax, diff_ax):
        a.set_xlabel("% of labelled training data")
        if len(fractions) > 1 and min(fractions) > 0 and max(fractions) / min(fractions) >= 8:
            a.set_xscale("log")
        a.set_xticks(x)
        a.set_xticklabels([f"{v:g}" for v in x])
        a.grid(True, alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _strategies(rows, label):
    """The strategy (or strategies, for a study folder resumed with another --strategy) of ``label``, each with
    the warm-up its runs had in effect (epochs the encoder was frozen)."""
    found = list(dict.fromkeys((r.get("strategy"), r.get("warmup_epochs")) for r in rows
                               if r["label"] == label and r.get("strategy")))
    return "/".join(strategy if warmup is None else f"{strategy}, warm-up {warmup}" for strategy, warmup in found) or "?"


def _fraction_label(rows, fraction):
    """``10`` when 10 % of the labels were used; ``0.1 (used 50)`` when the subset had to round up."""
    used = sorted({r["used_fraction"] for r in rows if r["fraction"] == fraction and r.get("used_fraction")})
    if not used or all(abs(u - fraction) < 0.005 for u in used):
        return f"{fraction * 100:g}"
    return f"{fraction * 100:g} (used {'/'.join(f'{u * 100:.3g}' for u in used)})"


def plot_convergence(path, curves, score_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, _ in curves))
    fractions = sorted({f for _, f in curves})
    fig, axes = plt.subplots(1, len(fractions), figsize=(3.6 * len(fractions) + 1, 3.8), squeeze=False,
                             sharey=True)
    for ax, fraction in zip(axes[0], fractions):
        for i, label in enumerate(labels):
            runs = curves.get((label, fraction), [])
            if not runs:
                continue
            length = max(len(c) for c in runs)
            stacked = np.full((len(runs), length), np.nan)
            for k, c in enumerate(runs):
                stacked[k, : len(c)] = c
            epochs = np.arange(1, length + 1)
            style = _style(label, i)
            with np.errstate(all="ignore"):
                mean = np.nanmean(stacked, axis=0)
            ax.plot(epochs, mean, label=label, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=4)
            ax.fill_between(epochs, np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0), color=style["color"],
                            alpha=0.15)
        ax.set_title(f"{fraction * 100:g}% of labels")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"validation {_score_title(score_name)}")
    axes[0][-1].legend()
    fig.suptitle("Convergence: validation score per epoch (mean, min-max over repeats)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _score_title(score_name):
    return {"mean_dice": "mean Dice (no background)", "kappa": "quadratic-weighted kappa"}.get(score_name, score_name)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def summary_markdown(rows, settings, task, speed_fraction=DEFAULT_SPEED_FRACTION, probe_rows=()):
    labels, fractions = _by_label(rows)
    score_name = rows[0]["score_name"] if rows and rows[0].get("score_name") else (
        "mean_dice" if task == "segmentation" else "kappa")
    test_sizes = sorted({r["test_size"] for r in rows if r.get("test_size")})
    held_out = f"{'/'.join(str(n) for n in test_sizes)}, " if test_sizes else ""
    lines = ["# Data-efficiency study", "",
             f"Task: {task}; score: {_score_title(score_name)} on the held-out test subjects ({held_out}"
             f"chosen by split seed {settings.split_seed} only; no run trains or selects its epoch on them), "
             "mean ± sd over label subsets (n).", ""]
    lines.append("| % labels | " + " | ".join(f"{label} ({_strategies(rows, label)})" for label in labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for f in fractions:
        cells = []
        for label in labels:
            s = _scores(rows, label, f)
            mean, sd = _mean_sd(s)
            cells.append(("n/a" if not s.size else f"{mean:.4f} (n=1)" if s.size == 1
                          else f"{mean:.4f} ± {sd:.4f} (n={s.size})") + at_maximum_note(rows, label, f))
        lines.append(f"| {_fraction_label(rows, f)} | " + " | ".join(cells) + " |")
    lines += _surface_table(rows, labels, fractions)
    if any(at_maximum_note(rows, label, f) for label in labels for f in fractions):  # finetune.convergence
        lines += ["", "`(k/n hit --epochs)`: k of the n runs stopped at their maximum --epochs without converging "
                  f"(--patience {settings.patience} not met); their score is not a converged one."]
    comparisons = compare_to_scratch(rows)
    if comparisons:
        lines += ["", "## Pretrained minus scratch, paired by label subset", "",
                  "Test-score difference on the same label subsets: mean ± sd [95 % bootstrap interval of the "
                  "mean] and the verdict: better / worse when the interval excludes 0, else not distinguishable.",
                  "", "| % labels | encoder | difference to scratch |", "|---|---|---|"]
        for (label, f), c in sorted(comparisons.items(), key=lambda item: (item[0][1], labels.index(item[0][0]))):
            lines.append(f"| {_fraction_label(rows, f)} | {label} | {format_comparison(c)} |")
    lines += speed_markdown(rows, speed_fraction)  # convergence speed (finetune.convergence)
    lines += probe_markdown(probe_rows)  # frozen-encoder probe (finetune.study_probe), with --probe-epochs
    walls = [r["wall_s"] for r in rows if r.get("wall_s") is not None]
    lines += ["", f"Runs: {len(rows)}; total training+evaluation time: {sum(walls):.0f} s.",
              f"Settings: epochs {settings.epochs}, strategy {settings.strategy}"
              f" (warm-up {settings.warmup_epochs}) for pretrained encoders; scratch trains fully "
              f"(strategy {SCRATCH_STRATEGY}) from the first step; lr {settings.lr}, batch size "
              f"{settings.batch_size}, test fraction {settings.test_fraction}, validation fraction "
              f"{settings.val_fraction} of the rest (split seed {settings.split_seed}); model selection: "
              f"{_selection_rule(settings)}{_convergence_rule(settings)}"
              + ("." if settings.augment == "none" else f"; training batches augmented ({settings.augment})."),
              "Label subsets: repeat r uses seed r; identical across encoders, nested across fractions.",
              "", "Figures: `data_efficiency.png`, `convergence.png`; every run: `runs.csv` "
              "(`keras_ssl3d.finetune.statistics.read_runs_csv` + `compare_to_scratch` recompute the tables).", ""]
    return "\n".join(lines)


def _surface_table(rows, labels, fractions):
    """Summary lines: HD95 and MSD (mm) per encoder and fraction, mean ± sd over label subsets."""
    if not any(r.get("hd95") is not None for r in rows):
        return []
    over = "the BraTS regions" if any(r.get("hd95_whole_tumor") is not None for r in rows) else "the foreground classes"
    lines = ["", "## Surface distances", "",
             f"HD95 and mean surface distance (MSD) in mm on the same test subjects, mean over {over}; lower is "
             "better; a structure missed (or found where there is none) counts as the volume's diagonal. Mean ± sd "
             "over label subsets.", "",
             "| % labels | " + " | ".join(f"{label} HD95 | {label} MSD" for label in labels) + " |",
             "|---|" + "---|---|" * len(labels)]
    for f in fractions:
        cells = []
        for label in labels:
            for column in ("hd95", "msd"):
                s = _scores(rows, label, f, column)
                mean, sd = _mean_sd(s)
                cells.append("n/a" if not s.size else f"{mean:.2f}" if s.size == 1 else f"{mean:.2f} ± {sd:.2f}")
        lines.append(f"| {_fraction_label(rows, f)} | " + " | ".join(cells) + " |")
    return lines


def _convergence_rule(settings):
    patience = "" if settings.patience is None else f"; until {settings.patience} epochs without improvement" + (
        f" (counted after the first {settings.min_epochs})" if settings.min_epochs else "")
    return patience + ("" if settings.lr_schedule == "constant" else f"; lr schedule {settings.lr_schedule}")


def _selection_rule(settings):
    if settings.select != "best":
        return "last epoch"
    return "best validation epoch" if settings.val_fraction else "last epoch (no validation subjects)"


def write_outputs(out, rows, curves, task, settings, speed_fraction=DEFAULT_SPEED_FRACTION, probes=None):
    score_name = "mean_dice" if task == "segmentation" else "kappa"
    plot_data_efficiency(out / "data_efficiency.png", rows, score_name)
    plot_convergence(out / "convergence.png", curves, score_name)
    write_text_atomic(out / "summary.md", summary_markdown(rows, settings, task, speed_fraction,
                                                            probes.rows if probes else ()))
