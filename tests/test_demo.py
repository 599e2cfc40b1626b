"""The demo end to end in a tiny configuration (seconds of training; the numbers mean nothing here)."""

import dataclasses
import json
import math

import pytest

from keras_ssl3d.demo import MARKER, format_summary, run_demo, tiny_config
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune.statistics import read_runs_csv


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    config = dataclasses.replace(tiny_config(), fractions=(0.5,), subsets=2)
    lines = []
    results = run_demo(task="rotation", out=out, seed=3, config=config, log=lines.append)
    return out, results, lines


def test_the_demo_is_the_study_on_the_labelled_set(demo):
    out, results, lines = demo
    # The study's own runs.csv is the demo's runs: one implementation of the loop and the statistics.
    study_rows = read_runs_csv(out / "study" / "runs.csv")
    assert [(r["label"], r["repeat"]) for r in results["runs"]] == [(r["label"], r["repeat"]) for r in study_rows]
    runs = {(r["label"], r["fraction"], r["repeat"]): r for r in results["runs"]}
    assert set(runs) == {(name, 0.5, k) for name in ("rotation", "scratch") for k in (0, 1)}
    for run in runs.values():
        assert 0.0 <= run["score"] <= 1.0 and run["score_name"] == "mean_dice"
        assert run["test_size"] == 2 and run["train_size"] == 2  # 6 labelled: 2 test, 1 validation, half of 3
    assert runs[("scratch", 0.5, 0)]["strategy"] == "full"
    # Same labelled subjects (and test subjects) for pretrained and scratch within a subset.
    config = {key: json.loads((out / "study" / "runs" / key[0] / "fraction_0.5" / f"repeat_{key[2]}" / "run.json")
                              .read_text())["config"] for key in runs}
    for k in (0, 1):
        assert config[("rotation", 0.5, k)]["train_subjects"] == config[("scratch", 0.5, k)]["train_subjects"]
        assert config[("rotation", 0.5, k)]["test_subjects"] == config[("scratch", 0.5, k)]["test_subjects"]
    # Converged-run settings reach every run: patience, steps per epoch, the selected epoch.
    assert {c["patience"] for c in config.values()} == {1} and {c["steps_per_epoch"] for c in config.values()} == {1}
    # The labelled subjects are never in the unlabelled pool the encoder was pretrained on.
    pool = {p.name for p in (out / "data" / "unlabelled").iterdir()}
    labelled = {p.name for p in (out / "data" / "labelled").iterdir()}
    assert len(pool) == 4 and len(labelled) == 6 and not pool & labelled
    assert not list((out / "data" / "unlabelled").rglob("*_seg.nii.gz"))
    # The paired comparison, by hand: differences of the test scores on the same subsets.
    diffs = [runs[("rotation", 0.5, k)]["score"] - runs[("scratch", 0.5, k)]["score"] for k in (0, 1)]
    (c,) = results["comparisons"]
    assert (c["encoder"], c["label_fraction"], c["n"]) == ("rotation", 0.5, 2)
    assert c["mean"] == pytest.approx(sum(diffs) / 2)
    assert c["sd"] == pytest.approx(abs(diffs[0] - diffs[1]) / math.sqrt(2))
    # Convergence speed: scratch minus pretrained steps, per subset.
    speeds = {(s["label"], s["repeat"]): s["steps"] for s in results["speeds"]}
    (sc,) = results["speed_comparisons"]
    assert sc["mean"] == pytest.approx(sum(speeds[("scratch", k)] - speeds[("rotation", k)] for k in (0, 1)) / 2)
    # The frozen-encoder probe beside it: pretrained, random and scratch-trained encoders on every subset,
    # each paired with the random encoder's probe on the same subset.
    probes = {(p["label"], p["repeat"]): p["score"] for p in results["probes"]}
    assert set(probes) == {(name, k) for name in ("rotation", "random", "scratch-trained") for k in (0, 1)}
    pc = {c["encoder"]: c for c in results["probe_comparisons"]}
    assert set(pc) == {"rotation", "scratch-trained"}
    assert pc["rotation"]["mean"] == pytest.approx(sum(probes[("rotation", k)] - probes[("random", k)]
                                                       for k in (0, 1)) / 2)
    pretext = results["pretext"]["rotation"]
    assert pretext["chance_loss"] == pytest.approx(math.log(10))
    assert pretext["chance_accuracy"] == pytest.approx(0.1)
    last = pretext["history"][-1]  # scored on the labelled subjects' images every epoch
    assert pretext["held_out_accuracy"] == last["val_accuracy"] and pretext["held_out_loss"] == last["val_loss"]
    assert any("pretraining rotation" in line for line in lines)


def test_files_report_and_summary(demo):
    out, results, _ = demo
    assert (out / MARKER).is_file()
    assert (out / "runs" / "pretrain-rotation" / "encoder" / "metadata.json").is_file()
    assert json.loads((out / "results.json").read_text())["runs"] == json.loads(json.dumps(results["runs"]))
    summary = (out / "study" / "summary.md").read_text()
    printed = format_summary(results, out)
    assert printed.startswith("pretext rotation: held-out pretext accuracy") and summary in printed
    report = (out / "report.md").read_text()
    assert "## Pretrained minus scratch, paired by label subset" in summary
    assert "### Pretrained minus scratch, paired by label subset" in report and "## Convergence speed" in summary
    assert "## Frozen-encoder probe" in summary
    for fig in ("study/data_efficiency.png", "study/convergence.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({fig})" in report
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_refuses_a_foreign_folder_and_bad_task(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not empty and holds no demo written by keras-ssl3d"):
        run_demo(out=tmp_path, config=tiny_config())
    assert (tmp_path / "mine.txt").read_text() == "user data"
    with pytest.raises(ConfigError, match="unknown demo task 'byol'"):
        run_demo(task="byol", out=tmp_path / "new", config=tiny_config())


def test_quick_source_starts_from_the_bundled_preset(tmp_path):
    """``encoder_source="bundled"`` (``demo --quick``) fine-tunes the zoo's demo preset instead of pretraining."""
    config = dataclasses.replace(tiny_config(), filters=(8, 16, 32), encoder_source="bundled", fractions=(0.5,),
                                 subsets=1)
    results = run_demo(task="rotation", out=tmp_path / "out", config=config, log=lambda _: None)
    pretext = results["pretext"]["rotation"]
    assert pretext["source"] == "bundled" and pretext["encoder"] == "demo-brats-rotation"
    assert not (tmp_path / "out" / "runs" / "pretrain-rotation").exists()
    assert not (tmp_path / "out" / "data" / "unlabelled").exists() and results["data"]["unlabelled"] is None
    assert {r["label"] for r in results["runs"]} == {"rotation", "scratch"}
    config_json = json.loads((tmp_path / "out" / "study" / "runs" / "rotation" / "fraction_0.5" / "repeat_0" /
                              "run.json").read_text())["config"]
    assert config_json["encoder"] == "demo-brats-rotation"
    # The preset's metadata says what its pretext task reached on held-out subjects, next to chance.
    assert 0.0 <= pretext["held_out_accuracy"] <= 1.0 and pretext["chance_accuracy"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="widths"):  # scratch must share the preset's architecture
        run_demo(task="rotation", out=tmp_path / "other", config=dataclasses.replace(config, filters=(4, 8)))


def test_cli_default_task_is_the_demos():
    from keras_ssl3d.cli.demo import DEFAULT_TASK as CLI_DEFAULT
    from keras_ssl3d.demo import DEFAULT_TASK

    assert CLI_DEFAULT == DEFAULT_TASK
