"""The demo end to end in a tiny configuration (seconds of training; the numbers mean nothing here)."""

import dataclasses
import json
import math

import pytest

from keras_ssl3d.demo import MARKER, REGIONS, _class_legend, format_table, run_demo, tiny_config
from keras_ssl3d.errors import ConfigError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    config = dataclasses.replace(tiny_config(), fractions=(0.5,))
    lines = []
    results = run_demo(task="rotation", out=out, seed=3, config=config, log=lines.append)
    return out, results, lines


def test_results_table_and_scores(demo):
    out, results, lines = demo
    runs = {(r["encoder"], r["label_fraction"]): r for r in results["runs"]}
    assert set(runs) == {("rotation", 0.5), ("scratch", 0.5)}
    for run in runs.values():
        assert set(run["dice"]) == {*REGIONS, "mean"}
        assert all(0.0 <= v <= 1.0 for v in run["dice"].values())
        assert run["labelled_subjects"] == 2  # ceil(0.5 * 4)
        assert run["history"] and run["history"][-1]["epoch"] == run["epochs"]
        assert (out / run["run"] / "model" / "metadata.json").is_file()
        assert len(run["per_subject"]) == 2  # the held-out subjects
    assert runs[("rotation", 0.5)]["strategy"] in ("warmup", "full")
    assert runs[("scratch", 0.5)]["strategy"] == "full"
    # The same labelled subjects for pretrained and scratch.
    configs = [json.loads((out / r["run"] / "run.json").read_text())["config"] for r in runs.values()]
    assert configs[0]["train_subjects"] == configs[1]["train_subjects"]
    table = format_table(results).splitlines()
    assert table[0].split() == ["labels", "encoder", "WT", "TC", "ET", "mean", "vs", "scratch"]
    rotation_row = next(line for line in table if "rotation" in line)
    gain = runs[("rotation", 0.5)]["dice"]["mean"] - runs[("scratch", 0.5)]["dice"]["mean"]
    assert rotation_row.split()[-1] == f"{gain:+.3f}"
    for run in runs.values():  # the mean column is the mean of the columns shown beside it
        assert run["dice"]["mean"] == pytest.approx(sum(run["dice"][r] for r in REGIONS) / 3)
    assert results["pretext"]["rotation"]["chance_loss"] == pytest.approx(math.log(10))
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
    with pytest.raises(ConfigError, match="not empty and holds no previous demo"):
        run_demo(out=tmp_path, config=tiny_config())
    assert (tmp_path / "mine.txt").read_text() == "user data"
    with pytest.raises(ConfigError, match="unknown demo task 'byol'"):
        run_demo(task="byol", out=tmp_path / "new", config=tiny_config())
