"""The frozen-encoder probe as a column of a study (``study --probe-epochs N``).

After the fine-tuning runs of one label subset (fraction, repeat), a probe head (`keras_ssl3d.finetune.probe`)
is trained on each frozen encoder: every pretrained encoder (under its study label), ``random`` (a randomly
initialised encoder of the scratch run's architecture, seeded by the repeat) and ``scratch-trained`` (the
encoder of that subset's scratch run). The probe takes its subjects by the runner's rules from the study's own
split settings, and before a probe trains, its train and test subjects are checked to equal those every run of
the subset recorded. Each probe's ``probe.json`` (``OUT/probes/LABEL/fraction_F/repeat_R/``) is reused when the
study runs again; ``OUT/probes.csv`` has one row per probe; `probe_markdown` is the summary's section, with each
encoder's probe compared to ``random``'s on the same subsets (`compare_to_scratch` with that baseline).
"""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.fileio import write_json_atomic
from keras_ssl3d.finetune.probe import PROBE_FILE, RANDOM, probe_subjects
from keras_ssl3d.finetune.runs_table import write_runs_csv
from keras_ssl3d.finetune.statistics import compare_to_scratch, format_comparison

PROBES_FILE = "probes.csv"
PROBES_DIR = "probes"
SCRATCH_TRAINED = "scratch-trained"
REGIONS = ("whole_tumor", "tumor_core", "enhancing_tumor")
COLUMNS = ["label", "encoder", "fraction", "repeat", "seed", "score", "score_name", *REGIONS, "train_size",
           "test_size", "epochs", "steps_per_epoch", "final_loss", "wall_s", "probe_dir"]


def check_probe_task(task):
    """The probe reads 3D label maps: refuse other data before anything is read or trained."""
    if task != "segmentation":
        raise ConfigError(f"--probe-epochs: the frozen-encoder probe needs 3D segmentation data (volumes with "
                          f"label maps), got {task} data (2D images); leave --probe-epochs at 0 for them")


class StudyProbes:
    """The probes of one study: `after_subset` trains (or reuses) those of a label subset; ``rows`` is probes.csv."""

    def __init__(self, data, out, settings, probe, specs, log=print):
        check_probe_task(data.task)
        taken = [label for label, _ in specs if label in (RANDOM, SCRATCH_TRAINED)]
        if taken:
            raise ConfigError(f"--encoders: {taken[0]!r} names a probe baseline with --probe-epochs; name that "
                              "encoder otherwise with --encoders NAME=PATH")
        self.data, self.out, self.settings, self.probe, self.log = data, Path(out), settings, probe, log
        self.pretrained = [(label, handle) for label, handle in specs if label != "scratch"]
        self.rows = []

    def settings_for(self, fraction, repeat):
        """The probe's settings for one subset: its split fields are always the study's (same subjects)."""
        s = self.settings
        return dataclasses.replace(self.probe, label_fraction=float(fraction), seed=int(repeat),
                                   split_seed=s.split_seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction)

    def after_subset(self, fraction, repeat, scratch_run, run_dirs):
        """Probe every encoder on the subset the runs in ``run_dirs`` trained on; True when one was trained."""
        from keras_ssl3d.finetune.probe import run_probe

        ps = self.settings_for(fraction, repeat)
        subjects = self._subjects(ps, run_dirs)
        trained = False
        for label, handle in [(RANDOM, RANDOM), (SCRATCH_TRAINED, str(scratch_run)), *self.pretrained]:
            folder = self.out / PROBES_DIR / label / f"fraction_{fraction:g}" / f"repeat_{repeat}"
            path = folder / PROBE_FILE
            if path.is_file():
                record = json.loads(path.read_text(encoding="utf-8"))
                _check_reused(path, record, ps, subjects)
                self.log(f"probe {label} {fraction:g} repeat {repeat}: reusing {folder}")
            else:
                self.log(f"probe {label}, {fraction:g} of the labels, repeat {repeat}")
                start = time.perf_counter()
                result = run_probe(self.data, self._encoder(handle, scratch_run, repeat), ps, name=label)
                record = {"encoder": handle, "settings": dataclasses.asdict(ps), "result": result,
                          "wall_s": time.perf_counter() - start}
                write_json_atomic(path, record)
                trained = True
            self.rows.append(probe_row(label, fraction, repeat, record, folder))
            write_runs_csv(self.out / PROBES_FILE, self.rows, COLUMNS)
        return trained

    def _subjects(self, ps, run_dirs):
        """``(train, test)`` subject ids of the probe, refused unless every run of the subset has the same."""
        from keras_ssl3d.finetune.runner import RESULT_FILE, _subject_id

        train, scored, _ = probe_subjects(len(self.data), ps)
        subjects = ([_subject_id(self.data, i) for i in train], [_subject_id(self.data, i) for i in scored])
        for run_dir in run_dirs:
            config = json.loads((Path(run_dir) / RESULT_FILE).read_text(encoding="utf-8")).get("config") or {}
            if (config.get("train_subjects"), config.get("test_subjects")) != subjects:
                raise ConfigError(f"{run_dir}: this run's train/test subjects are not those the probe would use "
                                  f"({ps.label_fraction:g} of the labels, seed {ps.seed}): the run was made with "
                                  "other split settings; use another --out")
        return subjects

    def _encoder(self, handle, scratch_run, repeat):
        from keras_ssl3d.finetune.probe import load_probe_encoder, random_like

        if handle == RANDOM:  # the scratch run's architecture, fresh weights
            return random_like(load_probe_encoder(str(scratch_run), self.data), seed=repeat)
        return load_probe_encoder(handle, self.data, adapt=self.settings.adapt)


def _check_reused(path, record, ps, subjects):
    """A finished probe is reused only if made with these settings on these subjects."""
    result = record.get("result") or {}
    made = {"steps_per_epoch": None, **(record.get("settings") or {})}  # probes made before the setting: one pass
    if (made != dataclasses.asdict(ps)
            or (result.get("train_subjects"), result.get("scored_subjects")) != subjects):
        raise ConfigError(f"{path}: this finished probe was made with other settings or subjects than the study "
                          "asks for (other --probe-epochs, --steps-per-epoch, --batch-size, --loss or split options, "
                          "or a folder from an older version): use another --out, or delete that probe to retrain it")


def probe_row(label, fraction, repeat, record, folder):
    """One probes.csv row of a finished probe (its ``probe.json`` record)."""
    result = record["result"]
    regions = result.get("regions") or {}
    return {"label": label, "encoder": record.get("encoder"), "fraction": float(fraction), "repeat": int(repeat),
            "seed": int(repeat), "score": result.get("mean_dice"), "score_name": "mean_dice",
            **{region: regions.get(region) for region in REGIONS},
            "train_size": result.get("train_size"), "test_size": result.get("scored_size"),
            "epochs": result.get("epochs"), "steps_per_epoch": result.get("steps_per_epoch"),
            "final_loss": result.get("final_loss"),
            "wall_s": None if record.get("wall_s") is None else round(float(record["wall_s"]), 2),
            "probe_dir": str(folder)}


def _cell(scores):
    if not scores.size:
        return "n/a"
    if scores.size == 1:
        return f"{scores[0]:.4f} (n=1)"
    return f"{scores.mean():.4f} ± {scores.std(ddof=1):.4f} (n={scores.size})"


def probe_markdown(rows):
    """The summary's "Frozen-encoder probe" section: mean ± sd per label and fraction, and each label's paired
    difference to the random encoder's probe (same wording as the study's comparison to scratch)."""
    if not rows:
        return []
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fractions = sorted({float(r["fraction"]) for r in rows})
    epochs = "/".join(str(e) for e in sorted({int(r["epochs"]) for r in rows if r.get("epochs") is not None}))
    steps = sorted({int(r["steps_per_epoch"]) for r in rows if r.get("steps_per_epoch") not in (None, "")})
    duration = f"{epochs} epochs" + (f" of about {'/'.join(str(s) for s in steps)} steps (whole passes over the "
                                     "labelled subjects, as the runs')" if steps else "")
    lines = ["", "## Frozen-encoder probe", "",
             f"A light head (a 1x1x1 convolution per encoder level, upsampled and summed) trained for {duration} "
             "on each FROZEN encoder, on the same label subsets and scored (mean Dice) on the same test "
             "subjects as the runs: what each encoder's features already separate, a diagnostic beside "
             f"fine-tuning. `{RANDOM}`: a randomly initialised encoder of the scratch architecture (seed = "
             f"repeat); `{SCRATCH_TRAINED}`: the encoder of that subset's scratch run. Mean ± sd over label "
             "subsets (n).", "",
             "| % labels | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for f in fractions:
        cells = [_cell(np.array([r["score"] for r in rows if r["label"] == label and float(r["fraction"]) == f
                                 and r.get("score") is not None], dtype=float)) for label in labels]
        lines.append(f"| {f * 100:g} | " + " | ".join(cells) + " |")
    comparisons = compare_to_scratch(rows, baseline=RANDOM)
    if comparisons:
        lines += ["", "Probe minus the random encoder's probe, paired by label subset: mean ± sd [95 % bootstrap "
                  "interval of the mean] and the verdict: better / worse when the interval excludes 0, else not "
                  "distinguishable.", "", f"| % labels | encoder | difference to {RANDOM} |", "|---|---|---|"]
        for (label, f), c in sorted(comparisons.items(), key=lambda item: (item[0][1], labels.index(item[0][0]))):
            lines.append(f"| {f * 100:g} | {label} | {format_comparison(c)} |")
    return lines
