"""The study command (tiny): every run in runs.csv, identical label subsets, a held-out test split, scratch
trained fully, paired comparison in the summary, both figures, resume."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from keras_ssl3d.data.synthetic import make_brats_like

    root = tmp_path_factory.mktemp("study")
    make_brats_like(root / "brats", n_subjects=5, shape=(16, 16, 16), seed=3)
    Encoder3D(in_channels=4, filters=(4, 8), norm="group").save_pretrained(root / "enc_a")
    return root


def _study(root, extra=(), out="out"):
    return run_cli(cli, ["study", "--data", str(root / "brats"), "--encoders", str(root / "enc_a"),
                         "--fractions", "0.5,1", "--repeats", "1", "--epochs", "2", "--warmup-epochs", "1",
                         "--size", "16", "--lr", "1e-3", "--out", str(root / out), *extra])


def test_study_outputs(setup, capsys):
    assert _study(setup) == 0
    out = setup / "out"
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 2 * 2  # (scratch + enc_a) x 2 fractions x 1 repeat
    assert {r["label"] for r in rows} == {"scratch", "enc_a"}
    # the baseline trains fully whatever --strategy says; the pretrained encoder warms up
    assert {(r["label"], r["strategy"]) for r in rows} == {("scratch", "full"), ("enc_a", "warmup")}
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 1.0 and r["score_name"] == "mean_dice"
        assert r["whole_tumor"] != "" and int(r["epochs"]) == 2
        # surface distances in mm: the mean over the BraTS regions, and each region
        regions = [float(r[f"hd95_{region}"]) for region in ("whole_tumor", "tumor_core", "enhancing_tumor")]
        assert float(r["hd95"]) == pytest.approx(np.mean(regions)) and min(regions) >= 0 and r["msd_tumor_core"] != ""
        # 5 subjects: 1 held out for the test, 1 of the other 4 for validation
        assert (r["test_size"], r["val_size"]) == ("1", "1") and r["selected_epoch"] in ("1", "2")
    # label subsets: identical across encoders, fixed by the repeat's seed, nested across fractions
    subsets, tests = {}, set()
    for r in rows:
        result = json.loads(open(f"{r['run_dir']}/result.json").read())
        config = result["config"]
        assert config == json.loads(open(f"{r['run_dir']}/run.json").read())["config"]
        subsets.setdefault((r["fraction"], r["repeat"]), set()).add(tuple(config["train_subjects"]))
        # the test subjects are held out of training and validation, and are what the run is scored on
        test = set(config["test_subjects"])
        assert len(test) == 1 and not test & set(config["train_subjects"]) and not test & set(config["val_subjects"])
        assert not set(config["train_subjects"]) & set(config["val_subjects"])
        assert result["evaluation"]["num_subjects"] == 1
        tests.add(tuple(config["test_subjects"]))
        assert config["strategy"] == r["strategy"] and config["select"] == "best"
        assert int(r["selected_epoch"]) == result["selected_epoch"] == int(np.argmax(result["curve"])) + 1
        # the scratch baseline copies the pretrained encoder's architecture
        assert config["filters"] == [4, 8]
    assert len(tests) == 1  # one test split for the whole study
    assert all(len(v) == 1 for v in subsets.values())
    half = {k[1]: next(iter(v)) for k, v in subsets.items() if float(k[0]) == 0.5}
    full = {k[1]: next(iter(v)) for k, v in subsets.items() if float(k[0]) == 1.0}
    assert all(len(half[r]) == 2 and set(half[r]) <= set(full[r]) for r in half)

    for name in ("data_efficiency.png", "convergence.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    summary = (out / "summary.md").read_text()
    assert "| % labels | scratch (full, warm-up 0) | enc_a (warmup, warm-up 1) |" in summary  # in effect per run
    assert "held-out test subjects" in summary
    assert "## Surface distances" in summary and "| % labels | scratch HD95 | scratch MSD | enc_a HD95 |" in summary
    for fraction, r in (("50 (used 66.7)", "0.5"), ("100", "1.0")):  # 2 of the 3 subjects left for training
        pair = {x["label"]: float(x["score"]) for x in rows if x["fraction"] == r}
        diff = pair["enc_a"] - pair["scratch"]
        assert f"| {fraction} | enc_a | {diff:+.3f} not distinguishable (one subset) |" in summary
    printed = capsys.readouterr().out
    assert "## Pretrained minus scratch, paired by label subset" in printed  # the CLI prints the summary
    # `evaluate --subjects test` scores a study run on its held-out test subjects: the study's own score.
    enc = next(r for r in rows if r["label"] == "enc_a" and r["fraction"] == "1.0")
    assert run_cli(cli, ["evaluate", "--model", enc["run_dir"], "--data", str(setup / "brats"), "--subjects", "test",
                         "--out", str(setup / "eval.json")]) == 0
    scored = json.loads((setup / "eval.json").read_text())
    assert scored["num_subjects"] == 1 and scored["mean_dice"] == pytest.approx(float(enc["score"]))
    assert scored["mean_hd95"] == pytest.approx(float(enc["hd95"]))

    # Running it again reuses every finished run.
    capsys.readouterr()
    assert _study(setup) == 0
    assert capsys.readouterr().out.count("reusing") == 4
    assert len(list(csv.DictReader(open(out / "runs.csv")))) == 4

    # A finished run made with another strategy or test split is not silently mixed into a study.
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.study_reuse import check_reused as _check_reused

    import dataclasses

    from keras_ssl3d.finetune.runner import FinetuneSettings

    enc = next(r for r in rows if r["label"] == "enc_a")
    result = json.loads(open(f"{enc['run_dir']}/result.json").read())
    c = result["config"]
    same = FinetuneSettings(epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], loss=c["loss"],
                            augment=c.get("augment", "none"), warmup_epochs=c["warmup_epochs"])
    _check_reused("result.json", result, c["test_subjects"], "warmup", same, scratch=False)
    with pytest.raises(ConfigError, match="result.json: .* other strategy than the study asks for"):
        _check_reused("result.json", result, c["test_subjects"], "full", same, scratch=False)
    with pytest.raises(ConfigError, match="other test subjects, strategy than"):
        _check_reused("result.json", result, ["someone_else"], "full", same, scratch=False)
    # ... nor one trained with another learning rate, patience, encoder learning-rate scale or warm-up
    other = dataclasses.replace(same, lr=c["lr"] * 2, patience=3, encoder_lr_scale=0.1,
                                warmup_epochs=c["warmup_epochs"] + 1, warmup_freezes="pretrained")
    with pytest.raises(ConfigError, match="other --lr, --patience, --encoder-lr-scale, --warmup-epochs, "
                                          "--warmup-freezes than"):
        _check_reused("result.json", result, c["test_subjects"], "warmup", other, scratch=False)
    with pytest.raises(ConfigError, match="other --lr, --patience than"):  # scratch has no encoder lr scale
        _check_reused("result.json", result, c["test_subjects"], "warmup", other, scratch=True)


def test_parallel_runs_train_the_same_runs_as_one_at_a_time(setup, capsys):
    assert _study(setup) == 0  # the sequential study (reused when the test above made it)
    capsys.readouterr()
    assert _study(setup, ["--parallel-runs", "2"], out="parallel") == 0
    printed = capsys.readouterr().out
    assert printed.count("(parallel runs)") == 4 and "reusing" not in printed
    one, two = (list(csv.DictReader(open(setup / name / "runs.csv"))) for name in ("out", "parallel"))
    keys = ("label", "fraction", "repeat", "strategy", "epochs", "selected_epoch", "test_size", "val_size")
    assert [[r[k] for k in keys] for r in two] == [[r[k] for k in keys] for r in one]  # the same runs, in order
    for a, b in zip(one, two):  # each process has a share of the cores: other float rounding, nothing more
        assert float(b["score"]) == pytest.approx(float(a["score"]), abs=1e-3)
        config = json.loads(open(f"{b['run_dir']}/result.json").read())["config"]
        assert config["train_subjects"] == json.loads(open(f"{a['run_dir']}/result.json").read())["config"][
            "train_subjects"]
    assert (setup / "parallel" / "summary.md").is_file() and (setup / "parallel" / "convergence.png").is_file()
    # resumed: every run is reused, none is trained again
    assert _study(setup, ["--parallel-runs", "2"], out="parallel") == 0
    assert capsys.readouterr().out.count("reusing") == 4


def test_a_parallel_run_that_fails_is_one_error_naming_its_run(setup, tmp_path):
    import shutil
    import tempfile
    from pathlib import Path

    from keras_ssl3d.data.labelled import load_task_data
    from keras_ssl3d.errors import RunError
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study_pool import RunPool

    data = load_task_data(setup / "brats", size=16, cache_dir=tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache")  # gone before the run's process opens it
    jobs_before = set(Path(tempfile.gettempdir()).glob("keras-ssl3d-study-*"))
    run = tmp_path / "study" / "runs" / "scratch" / "repeat_0"
    with pytest.raises(RunError, match=rf"^{run}: .*cache.* \(a parallel run\)$"):
        with RunPool(2, data, [(run, FinetuneSettings(encoder="none", epochs=1, filters=(4, 8)))]) as pool:
            pool.result(run)
    assert not run.exists() and set(Path(tempfile.gettempdir()).glob("keras-ssl3d-study-*")) <= jobs_before


def test_study_bad_options(setup, capsys):
    code = run_cli(cli, ["study", "--data", str(setup / "brats"), "--encoders", "none", "--fractions", "0,1",
                         "--out", str(setup / "bad")])
    assert code == 2 and "--fractions" in capsys.readouterr().err
    code = run_cli(cli, ["study", "--data", str(setup / "brats"), "--encoders", "none", "--repeats", "0",
                         "--epochs", "1", "--size", "16", "--filters", "4,8", "--out", str(setup / "bad")])
    assert code == 2 and "--repeats" in capsys.readouterr().err
    code = run_cli(cli, ["study", "--data", str(setup / "brats"), "--encoders", "none", "--test-fraction", "0",
                         "--out", str(setup / "bad")])
    assert code == 2 and "'--test-fraction': 0.0 is not in the range 0<x<1" in capsys.readouterr().err


def test_encoder_names_are_distinct_for_pretrain_run_folders():
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.study import encoder_label, split_encoder_spec

    # `pretrain` writes RUN/encoder: two runs used to both be named "encoder".
    assert [encoder_label(p) for p in ("runs/cpc/encoder", "runs/rpl/encoder/", "ft/model", "brats-cpc",
                                       "none")] == ["cpc", "rpl", "ft", "brats-cpc", "scratch"]
    assert split_encoder_spec("mine=runs/cpc/encoder") == ("mine", "runs/cpc/encoder")
    assert split_encoder_spec("runs/cpc/encoder") == ("cpc", "runs/cpc/encoder")
    with pytest.raises(ConfigError, match="names no encoder"):
        split_encoder_spec("mine=")
    with pytest.raises(ConfigError, match="baseline"):
        split_encoder_spec("scratch=runs/x/encoder")
