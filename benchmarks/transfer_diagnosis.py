"""What makes pretraining transfer at CPU scale: the paired studies behind docs/transfer.md.

    python benchmarks/transfer_diagnosis.py --out /tmp/diagnosis [--groups main,pretext,...] [--probe]
    python benchmarks/transfer_diagnosis.py --out /tmp/diagnosis --report

Every factor is the demo's pipeline (`keras_ssl3d.demo.runner`: synthetic data, `pretrain_encoder`, the
demo's `DemoConfig.finetune_settings`) with one setting changed, fine-tuned by the library's study
(`run_study`) on the same labelled subjects, the same held-out test subjects and the same label subsets
(repeat r = seed r) as the scratch arm it is paired with. A group whose scratch arm is trained exactly as
another group's reuses those finished scratch runs (copied; the study checks test subjects and strategy).
Seeds are fixed here and were not chosen for any result. Prints one JSON line per group (the paired
comparisons); the studies' folders hold everything (runs.csv, summary.md). ``--probe`` adds the demo's
frozen-encoder probe to every study (a finished study's runs are reused: only the probes train), a column of
``--report``. Studies train ``DemoConfig.parallel_runs`` runs at a time (1, as the demo: see `run_study`).
"""

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

SEED = 0
POOLS = (24, 200, 1000)
# The protocol of every table in docs/transfer.md (the demo adopted other values afterwards: DemoConfig).
BASE = dict(n_unlabelled=200, crop_foreground=True, min_epochs=0)
HARD = {"flip_p": 1.0, "rotation_p": 1.0, "color_p": 1.0, "zoom_p": 0.5}

# group -> (arms, finetune-setting changes for the pretrained arms, scratch shared with group)
# arm: (label, task, DemoConfig changes)
GROUPS = {
    "main": ([("exemplar-pool200", "exemplar", {}),
              ("exemplar-pool24", "exemplar", {"n_unlabelled": 24}),
              ("exemplar-pool1000", "exemplar", {"n_unlabelled": 1000}),
              ("exemplar-nocrop", "exemplar", {"crop_foreground": False})], {}, None),
    "pretext": ([("exemplar-hard", "exemplar", {"task_options": tuple(HARD.items())}),
                 ("jigsaw-10perm", "jigsaw", {}),
                 ("genesis", "genesis", {})], {}, "main"),
    "min-epochs-15": ([("exemplar-pool200", "exemplar", {}),
                       ("exemplar-nocrop", "exemplar", {"crop_foreground": False})], {"min_epochs": 15}, None),
    "pretext-more": ([("simclr", "simclr", {}),
                      ("jigsaw-100perm", "jigsaw", {"task_options": (("num_permutations", 100),)})], {}, "main"),
    "pretext-extra": ([("exemplar-batch8", "exemplar", {"pretrain_batch_size": 8}),
                       ("jigsaw-nojitter", "jigsaw", {"task_options": (("jitter", 0),)}),
                       ("mae", "mae", {})], {}, "main"),
    "norm-instance": ([("exemplar-instance", "exemplar", {"norm": "instance"})], {}, None),
    "norm-group": ([("exemplar-group", "exemplar", {"norm": "group"})], {}, None),
    "encoder-lr-0.1": ([("exemplar-pool200", "exemplar", {})], {"encoder_lr_scale": 0.1}, "main"),
    "lr-warmup-3": ([("exemplar-pool200", "exemplar", {})], {"lr_warmup_epochs": 3}, "main"),
    "freeze-warmup-3": ([("exemplar-pool200", "exemplar", {})], {"strategy": "warmup", "warmup_epochs": 3}, "main"),
    "genesis-fresh-decoder": ([("genesis", "genesis", {})], {"decoder": "fresh"}, "main"),
    # (f) the warm-up of a restoration task's pretrained U-Net: 3 epochs freezing its encoder, or encoder and decoder
    "restoration-warmup-encoder": ([("genesis", "genesis", {}), ("mae", "mae", {})],
                                   {"strategy": "warmup", "warmup_epochs": 3}, "main"),
    "restoration-warmup-pretrained": ([("genesis", "genesis", {}), ("mae", "mae", {})],
                                      {"strategy": "warmup", "warmup_epochs": 3, "warmup_freezes": "pretrained"},
                                      "main"),
}


def config_for(changes):
    from keras_ssl3d.demo.runner import DemoConfig

    return dataclasses.replace(DemoConfig(), **{**BASE, **changes})


def make_data(root):
    """The labelled set and the unlabelled pools (pool N = the first N subjects of one generator seed)."""
    from keras_ssl3d.data.synthetic import make_brats_like
    from keras_ssl3d.demo.runner import DemoConfig

    shape = DemoConfig().shape
    labelled = root / "data" / "labelled"
    if not labelled.is_dir():
        make_brats_like(labelled, n_subjects=DemoConfig().n_labelled, shape=shape, seed=SEED)
    pools = {}
    for n in POOLS:
        pools[n] = root / "data" / f"pool-{n}"
        if not pools[n].is_dir():
            make_brats_like(pools[n], n_subjects=n, shape=shape, seed=SEED + 10_000, prefix="BraTS_SynthPool",
                            with_labels=False)
    return labelled, pools


def pretrained(root, label, task, changes, labelled, pools, log):
    """The arm's encoder preset (pretrained once, reused by every group that names the arm)."""
    from keras_ssl3d.demo.runner import pretrain_encoder

    run_dir = root / "pretrain" / label
    preset = run_dir / "encoder"
    if (preset / "metadata.json").is_file():
        return preset, json.loads((run_dir / "pretext.json").read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted pretraining of this script's own: start it again
    config = config_for(changes)
    t0 = time.time()
    folder, _, pretext = pretrain_encoder(task, pools[config.n_unlabelled], run_dir, config, SEED, verbose=0,
                                          held_out_dir=labelled)
    pretext = {**pretext, "seconds": round(time.time() - t0, 1), "epochs": config.pretrain_epochs()}
    (run_dir / "pretext.json").write_text(json.dumps(pretext))
    log(f"pretrained {label}: {json.dumps(pretext)}")
    return folder, pretext


def run_group(root, name, labelled, pools, log, probe=False):
    import keras

    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.finetune import statistics
    from keras_ssl3d.finetune.convergence import compare_speeds, run_speeds
    from keras_ssl3d.finetune.study import run_study

    arms, finetune_changes, shared = GROUPS[name]
    norm = config_for(arms[0][2]).norm
    encoders, pretext = [], {}
    for label, task, changes in arms:
        preset, pretext[label] = pretrained(root, label, task, changes, labelled, pools, log)
        encoders.append(f"{label}={preset}")
    out = root / "studies" / name
    if shared and not (out / "runs" / "scratch").exists():
        (out / "runs").mkdir(parents=True, exist_ok=True)
        shutil.copytree(root / "studies" / shared / "runs" / "scratch", out / "runs" / "scratch")
    base = config_for({"norm": norm})
    settings = dataclasses.replace(base.finetune_settings(SEED), **finetune_changes)
    data = load_task_data(labelled, size=base.size, task="segmentation", cache_root=root / "caches")
    keras.backend.clear_session()
    rows = run_study(data, encoders, base.fractions, base.subsets, settings, out, log=log,
                     probe=base.probe_settings() if probe else None, parallel_runs=base.parallel_runs)
    speeds = run_speeds(rows)
    result = {"group": name, "settings": {k: v for k, v in finetune_changes.items()}, "pretext": pretext,
              "test": {f"{k[0]}@{k[1]}": dataclasses.asdict(c) for k, c in statistics.compare_to_scratch(rows).items()},
              "speed": {f"{k[0]}@{k[1]}": dataclasses.asdict(c) for k, c in compare_speeds(speeds).items()}}
    (root / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
    return result


def report(root):
    """Markdown tables of every finished group (for docs/transfer.md), and the power analysis (g)."""
    from keras_ssl3d.finetune import statistics
    from keras_ssl3d.finetune.convergence import compare_speeds, run_speeds

    lines = []
    for name in GROUPS:
        runs_csv = root / "studies" / name / "runs.csv"
        if not runs_csv.is_file():
            continue
        rows = statistics.read_runs_csv(runs_csv)
        scores = statistics.compare_to_scratch(rows)
        speeds = compare_speeds(run_speeds(rows))
        pretext = json.loads((root / f"{name}.json").read_text())["pretext"] if (root / f"{name}.json").is_file() else {}
        probes_csv = root / "studies" / name / "probes.csv"  # with --probe: the frozen-encoder probe per arm
        probe_rows = statistics.read_runs_csv(probes_csv) if probes_csv.is_file() else []
        probe_vs_random = statistics.compare_to_scratch(probe_rows, baseline="random") if probe_rows else {}
        probe_head = " probe Dice (mean) | probe minus random encoder's, paired |" if probe_rows else ""
        lines += [f"### {name}", "", "| arm | pretext held-out acc. | test Dice (mean ± sd) | converged | "
                  "minus scratch, paired | convergence speed (steps saved), paired |" + probe_head,
                  "|---|---|---|---|---|---|" + ("---|---|" if probe_rows else "")]
        for label in dict.fromkeys(r["label"] for r in rows):
            mine = [r for r in rows if r["label"] == label]
            values = [float(r["score"]) for r in mine]
            sd = statistics_sd(values)
            acc = (pretext.get(label) or {}).get("held_out_accuracy")
            loss = (pretext.get(label) or {}).get("held_out_loss")
            p = "—" if label == "scratch" else f"{acc:.3f}" if acc is not None else (
                f"loss {loss:.4f}" if loss is not None else "n/a")
            conv = sum(1 for r in mine if str(r.get("converged")).lower() == "true")
            key = (label, float(mine[0]["fraction"]))
            test = statistics.format_comparison(scores[key]) if key in scores else "—"
            speed = statistics.format_comparison(speeds[key]) if key in speeds else "—"
            probe = ""
            if probe_rows:  # scratch's row: the probe on its trained encoder ("scratch-trained")
                probe_label = "scratch-trained" if label == "scratch" else label
                probed = [float(r["score"]) for r in probe_rows if r["label"] == probe_label]
                compared = probe_vs_random.get((probe_label, key[1]))
                probe = (f" {sum(probed) / len(probed):.3f} (n={len(probed)}) | " if probed else " — | ") + (
                    f"{statistics.format_comparison(compared)} |" if compared else "— |")
            lines.append(f"| {label} | {p} | {sum(values) / len(values):.3f} ± {sd:.3f} (n={len(values)}) | "
                         f"{conv}/{len(mine)} | {test} | {speed} |{probe}")
        if probe_rows:
            random = [float(r["score"]) for r in probe_rows if r["label"] == "random"]
            lines.append(f"\nProbe of a random encoder (the probe's baseline): {sum(random) / len(random):.3f} "
                         f"(n={len(random)}).")
        lines.append("")
    lines += power(root)
    return "\n".join(lines)


def statistics_sd(values):
    """Sample sd (ddof=1), nan for one value."""
    import numpy as np

    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def power(root, target=0.03, arm="exemplar-pool200"):
    """(g): label subsets and test subjects a 95 % interval of half-width ``target`` needs, from the main group's
    spread: var(paired difference) = var(between subsets) + var(per-subject difference) / test subjects."""
    import numpy as np

    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.finetune.evaluation import evaluate_model, load_finetuned
    from keras_ssl3d.finetune.statistics import read_runs_csv

    runs_csv = root / "studies" / "main" / "runs.csv"
    if not runs_csv.is_file():
        return []
    rows = read_runs_csv(runs_csv)
    data = load_task_data(root / "data" / "labelled", size=config_for({}).size, task="segmentation",
                          cache_root=root / "caches")
    per_subject = {}
    for r in rows:
        if r["label"] in ("scratch", arm):
            model, metadata = load_finetuned(Path(r["run_dir"]))
            scores = evaluate_model(model, metadata, data, subjects="test")["per_subject"]
            per_subject[(r["label"], int(r["repeat"]))] = np.array([s["mean_dice"] for s in scores], dtype=float)
    repeats = sorted(k for (lab, k) in per_subject if lab == arm and ("scratch", k) in per_subject)
    diffs = np.array([per_subject[(arm, k)] - per_subject[("scratch", k)] for k in repeats])  # (subsets, subjects)
    n_test = diffs.shape[1]
    run_diffs = diffs.mean(axis=1)
    within = float(np.mean(diffs.var(axis=1, ddof=1)))          # per-subject difference variance
    total = float(run_diffs.var(ddof=1))
    between = max(0.0, total - within / n_test)
    need_subsets = int(np.ceil((1.96 ** 2) * total / target ** 2))
    rows_out = ["### (g) how many label subsets and test subjects", "",
                f"From {len(repeats)} subsets of `{arm}` minus scratch (main group), {n_test} test subjects each: sd of "
                f"the paired difference {np.sqrt(total):.3f}; of it, the test-subject sampling part "
                f"sqrt(var_subject / n_test) = {np.sqrt(within / n_test):.3f} and the label-subset part "
                f"{np.sqrt(between):.3f} (per-subject difference sd {np.sqrt(within):.3f}).", "",
                "| test subjects | subsets for a 95 % half-width of 0.03 |", "|---|---|"]
    for n in (n_test, 2 * n_test, 4 * n_test, 10 ** 6):
        var = between + within / n
        rows_out.append(f"| {'infinite' if n == 10 ** 6 else n} | {int(np.ceil(1.96 ** 2 * var / target ** 2))} |")
    rows_out += ["", f"With today's {n_test} test subjects: {need_subsets} subsets.", ""]
    return rows_out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--report", action="store_true", help="print the markdown tables of the finished groups")
    parser.add_argument("--probe", action="store_true", help="the demo's frozen-encoder probe in every study "
                        "(a finished group's runs are reused: only the probes are trained)")
    args = parser.parse_args(argv)
    root = args.out
    if args.report:
        print(report(root))
        return
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(text):
        print(f"[{time.time() - start:7.1f}s] {text}", file=sys.stderr, flush=True)

    labelled, pools = make_data(root)
    for name in args.groups.split(","):
        run_group(root, name, labelled, pools, log, probe=args.probe)


if __name__ == "__main__":
    main()
