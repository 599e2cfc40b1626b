"""The demo end to end in a tiny configuration (seconds of training; the numbers mean nothing here)."""

import dataclasses
import json
import math

import pytest

from keras_ssl3d.demo import MARKER, REGIONS, format_table, run_demo, tiny_config
from keras_ssl3d.demo.report import _class_legend
from keras_ssl3d.errors import ConfigError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    config = dataclasses.replace(tiny_config(), fractions=(0.5,), subsets=2)
    lines = []
    results = run_demo(task="rotation", out=out, seed=3, config=config, log=lines.append)
    return out, results, lines


def test_results_table_and_scores(demo):
    out, results, lines = demo
    runs = {(r["encoder"], r["label_fraction"], r["subset"]): r for r in results["runs"]}
    assert set(runs) == {(name, 0.5, k) for name in ("rotation", "scratch") for k in (0, 1)}
    for run in runs.values():
        assert set(run["dice"]) == {*REGIONS, "mean"}
        assert all(0.0 <= v <= 1.0 for v in run["dice"].values())
        assert set(run["hd95"]) == set(run["msd"]) == {*REGIONS, "mean"} and min(run["hd95"].values()) >= 0
        assert run["hd95"]["mean"] == pytest.approx(sum(run["hd95"][r] for r in REGIONS) / 3)
        assert run["labelled_subjects"] == 2  # ceil(0.5 * 4)
        assert run["history"] and run["history"][-1]["epoch"] == run["epochs"]
        assert (out / run["run"] / "model" / "metadata.json").is_file()
        assert len(run["per_subject"]) == 2  # the held-out subjects
    assert runs[("scratch", 0.5, 0)]["strategy"] == "full"
    # The same labelled subjects for pretrained and scratch within a subset, other subjects in the other subset.
    subjects = {key: json.loads((out / r["run"] / "run.json").read_text())["config"]["train_subjects"]
                for key, r in runs.items()}
    assert subjects[("rotation", 0.5, 0)] == subjects[("scratch", 0.5, 0)]
    assert sorted({s.split("#")[0] for s in subjects[("scratch", 0.5, 0)]}) == runs[("scratch", 0.5, 0)]["labelled_ids"]
    assert subjects[("rotation", 0.5, 1)] == subjects[("scratch", 0.5, 1)]
    # The paired comparison, by hand: differences of the mean Dice on the same subsets.
    diffs = [runs[("rotation", 0.5, k)]["dice"]["mean"] - runs[("scratch", 0.5, k)]["dice"]["mean"] for k in (0, 1)]
    (c,) = results["comparisons"]
    assert (c["encoder"], c["label_fraction"], c["n"]) == ("rotation", 0.5, 2)
    assert c["mean"] == pytest.approx(sum(diffs) / 2)
    assert c["sd"] == pytest.approx(abs(diffs[0] - diffs[1]) / math.sqrt(2))
    assert min(diffs) - 1e-9 <= c["low"] <= c["high"] <= max(diffs) + 1e-9
    table = format_table(results).splitlines()
    assert table[0].split()[:8] == ["labels", "encoder", "subsets", "WT", "TC", "ET", "mean", "sd"]
    rotation_row = next(line for line in table if " rotation " in line)
    assert f"{c['mean']:+.3f}" in rotation_row and c["verdict"] in rotation_row
    scratch_row = next(line for line in table if " scratch " in line)
    mean = sum(runs[("scratch", 0.5, k)]["dice"]["mean"] for k in (0, 1)) / 2
    assert scratch_row.split()[7] == f"{mean:.3f}"
    for run in runs.values():  # the mean column is the mean of the columns shown beside it
        assert run["dice"]["mean"] == pytest.approx(sum(run["dice"][r] for r in REGIONS) / 3)
    pretext = results["pretext"]["rotation"]
    assert pretext["chance_loss"] == pytest.approx(math.log(10))
    assert pretext["chance_accuracy"] == pytest.approx(0.1)
    # Scored on the held-out test subjects every epoch: the last epoch's numbers are the summary's.
    last = pretext["history"][-1]
    assert pretext["held_out_accuracy"] == last["val_accuracy"] and pretext["held_out_loss"] == last["val_loss"]
    assert "held-out pretext accuracy" in table[-1] and "(chance 0.100)" in table[-1]
    assert any("pretraining rotation" in line for line in lines)


def test_files_report_and_figures(demo):
    out, results, _ = demo
    assert (out / MARKER).is_file()
    assert len(list((out / "data" / "train").glob("*/*_flair.nii.gz"))) == 4
    assert len(list((out / "data" / "test").glob("*/*_seg.nii.gz"))) == 2
    assert (out / "runs" / "pretrain-rotation" / "encoder" / "metadata.json").is_file()
    assert json.loads((out / "results.json").read_text())["runs"] == json.loads(json.dumps(results["runs"]))
    report = (out / "report.md").read_text()
    assert format_table(results) in report and "lr 0.001" in report
    assert "| HD95 WT | TC | ET (mm) |" in report
    first = results["runs"][0]
    assert "".join(f"{first['hd95'][r]:.1f} | " for r in REGIONS) in report
    assert sorted(results["figures"]) == ["figures/dice_vs_labels.png", "figures/example_segmentation.png",
                                          "figures/training_curves.png"]
    for fig in results["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({fig})" in report
    test_data = type("T", (), {"class_names": ["background", "necrotic", "edema", "enhancing"], "num_classes": 4})
    legend = _class_legend(test_data, vmax=3)  # the example segmentation's colour key
    assert [p.get_label() for p in legend] == ["background", "necrotic", "edema", "enhancing"]
    assert legend[0].get_facecolor() != legend[3].get_facecolor()
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
    run = next(r for r in results["runs"] if r["encoder"] == "rotation")
    config_json = json.loads((tmp_path / "out" / run["run"] / "run.json").read_text())["config"]
    assert config_json["encoder"] == "demo-brats-rotation"
    # The preset's metadata says what its pretext task reached on held-out subjects, next to chance.
    assert 0.0 <= pretext["held_out_accuracy"] <= 1.0 and pretext["chance_accuracy"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="widths"):  # scratch must share the preset's architecture
        run_demo(task="rotation", out=tmp_path / "other", config=dataclasses.replace(config, filters=(4, 8)))


def test_cli_default_task_is_the_demos():
    from keras_ssl3d.cli.demo import DEFAULT_TASK as CLI_DEFAULT
    from keras_ssl3d.demo import DEFAULT_TASK

    assert CLI_DEFAULT == DEFAULT_TASK
