"""`study --probe-epochs`: the frozen-encoder probe as a column of the study (tiny): probes.csv rows for random,
scratch-trained and each pretrained encoder on exactly the runs' subjects, reused on a rerun, and the summary's
probe section checked against a hand computation."""

import csv
import json
import math

import pytest

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.finetune.runs_table import write_runs_csv
from keras_ssl3d.finetune.statistics import read_runs_csv
from keras_ssl3d.finetune.study_probe import COLUMNS, probe_markdown


def _rows(table):
    return [{"label": label, "fraction": fraction, "repeat": repeat, "score": score, "epochs": 3}
            for label, fraction, scores in table for repeat, score in enumerate(scores) if score is not None]


def test_probe_section_equals_a_hand_computation(tmp_path):
    rows = _rows([("random", 0.5, [0.10, 0.20, 0.30]), ("scratch-trained", 0.5, [0.20, 0.25, 0.45]),
                  ("enc_a", 0.5, [0.30, 0.35, 0.70]),
                  ("random", 1.0, [0.50, 0.60, 0.70]), ("scratch-trained", 1.0, [0.40, 0.50, 0.60]),
                  ("enc_a", 1.0, [0.55, 0.60, None])])
    write_runs_csv(tmp_path / "probes.csv", rows, COLUMNS)  # a fixed probes.csv, read back as the user would
    lines = probe_markdown(read_runs_csv(tmp_path / "probes.csv"))
    assert "## Frozen-encoder probe" in lines and "trained for 3 epochs" in "\n".join(lines)
    assert "| % labels | random | scratch-trained | enc_a |" in lines
    # means and sample sds: enc_a at 50 %: (0.3 + 0.35 + 0.7) / 3 = 0.45, deviations -0.15 -0.1 +0.25:
    # sd = sqrt((0.0225 + 0.01 + 0.0625) / 2) = sqrt(0.0475)
    assert f"{math.sqrt(0.0475):.4f}" == "0.2179"
    assert "| 50 | 0.2000 ± 0.1000 (n=3) | 0.3000 ± 0.1323 (n=3) | 0.4500 ± 0.2179 (n=3) |" in lines
    assert "| 100 | 0.6000 ± 0.1000 (n=3) | 0.5000 ± 0.1000 (n=3) | 0.5750 ± 0.0354 (n=2) |" in lines
    # paired with the random encoder on the same subsets. enc_a at 50 %: diffs 0.2, 0.15, 0.4 -> mean 0.25,
    # sd sqrt((0.0025 + 0.01 + 0.0225) / 2) = 0.1323; 3 subsets: each all-same resample has probability
    # 1/27 > 2.5 %, so the 95 % interval is [min, max] = [0.15, 0.4]: better.
    assert "| 50 | enc_a | +0.250 ± 0.132 [+0.150, +0.400] better |" in lines
    # scratch-trained at 50 %: diffs 0.1, 0.05, 0.15 -> mean 0.1, sd 0.05, interval [0.05, 0.15]
    assert "| 50 | scratch-trained | +0.100 ± 0.050 [+0.050, +0.150] better |" in lines
    # 100 %: scratch-trained is 0.1 below in every subset (sd 0, the interval is the mean): worse
    assert "| 100 | scratch-trained | -0.100 ± 0.000 [-0.100, -0.100] worse |" in lines
    # enc_a has repeats 0 and 1 only: diffs 0.05, 0.0; a quarter of the resamples are (0, 0): [0, 0.05]
    assert "| 100 | enc_a | +0.025 ± 0.035 [+0.000, +0.050] not distinguishable |" in lines
    assert probe_markdown([]) == []
    # epochs of --steps-per-epoch steps (whole passes), as the runs': said so
    stepped = "\n".join(probe_markdown([{**r, "steps_per_epoch": 20} for r in rows]))
    assert ("trained for 3 epochs of about 20 steps (whole passes over the labelled subjects, as the runs') on "
            "each FROZEN encoder") in stepped


def test_a_probe_made_before_steps_per_epoch_existed_is_reused_as_one_pass_epochs():
    import dataclasses

    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.probe import ProbeSettings
    from keras_ssl3d.finetune.study_probe import _check_reused

    old = ProbeSettings(epochs=3)
    record = {"settings": {k: v for k, v in dataclasses.asdict(old).items() if k != "steps_per_epoch"},
              "result": {"train_subjects": ["a"], "scored_subjects": ["b"]}}
    _check_reused("probe.json", record, old, (["a"], ["b"]))  # made with one pass per epoch: the same
    with pytest.raises(ConfigError, match="--steps-per-epoch"):
        _check_reused("probe.json", record, dataclasses.replace(old, steps_per_epoch=20), (["a"], ["b"]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from keras_ssl3d.data.synthetic import make_brats_like

    root = tmp_path_factory.mktemp("study_probe")
    make_brats_like(root / "brats", n_subjects=5, shape=(16, 16, 16), seed=3)
    Encoder3D(in_channels=4, filters=(4, 8), norm="group").save_pretrained(root / "enc_a")
    return root


def _study(root, out, encoders=None, extra=()):
    return run_cli(cli, ["study", "--data", str(root / "brats"), "--encoders", encoders or str(root / "enc_a"),
                         "--fractions", "0.5", "--repeats", "2", "--epochs", "1", "--strategy", "full",
                         "--size", "16", "--lr", "1e-3", "--out", str(out), "--probe-epochs", "1", *extra])


def test_study_probes_every_encoder_on_the_runs_subjects_and_reuses_them(setup, monkeypatch, capsys):
    from keras_ssl3d.finetune import probe

    calls = []
    real = probe.run_probe
    monkeypatch.setattr(probe, "run_probe", lambda *a, **k: calls.append(k["name"]) or real(*a, **k))
    out = setup / "out"
    assert _study(setup, out) == 0
    assert sorted(calls) == sorted(["random", "scratch-trained", "enc_a"] * 2)
    rows = list(csv.DictReader(open(out / "probes.csv")))
    assert sorted((r["label"], r["repeat"]) for r in rows) == sorted(
        (label, repeat) for label in ("random", "scratch-trained", "enc_a") for repeat in ("0", "1"))
    runs = {(r["label"], r["repeat"]): r for r in csv.DictReader(open(out / "runs.csv"))}
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 1.0 and r["epochs"] == "1" and r["fraction"] == "0.5"
        assert (r["train_size"], r["test_size"]) == ("2", "1")  # 5 subjects: 1 test, 1 validation, 2 of 3
        record = json.loads(open(f"{r['probe_dir']}/probe.json").read())
        assert float(r["score"]) == record["result"]["mean_dice"] and record["settings"]["seed"] == int(r["repeat"])
        # exactly the subjects the fine-tuning runs of this repeat trained on and were scored on
        for label in ("scratch", "enc_a"):
            run_dir = runs[(label, r["repeat"])]["run_dir"]
            config = json.loads(open(f"{run_dir}/result.json").read())["config"]
            assert config == json.loads(open(f"{run_dir}/run.json").read())["config"]
            assert record["result"]["train_subjects"] == config["train_subjects"]
            assert record["result"]["scored_subjects"] == config["test_subjects"]
    scratch_run = runs[("scratch", "0")]["run_dir"]
    assert next(r for r in rows if r["label"] == "scratch-trained" and r["repeat"] == "0")["encoder"] == scratch_run
    subsets = {json.dumps(json.loads(open(f"{r['probe_dir']}/probe.json").read())["result"]["train_subjects"])
               for r in rows}
    assert len(subsets) == 2  # one per repeat: the label subset follows the repeat's seed
    summary = (out / "summary.md").read_text()
    assert "## Frozen-encoder probe" in summary and "| % labels | random | scratch-trained | enc_a |" in summary
    assert "| 50 | enc_a | " in summary and "| 50 | scratch-trained | " in summary
    assert "## Frozen-encoder probe" in capsys.readouterr().out

    # Running it again trains no probe (nor run): every probe.json is reused, probes.csv is the same.
    before = {r["probe_dir"]: (out / r["probe_dir"] / "probe.json").stat().st_mtime_ns for r in rows}
    calls.clear()
    assert _study(setup, out) == 0
    assert calls == [] and capsys.readouterr().out.count("reusing") == 4 + 6
    assert list(csv.DictReader(open(out / "probes.csv"))) == rows
    assert {d: (out / d / "probe.json").stat().st_mtime_ns for d in before} == before

    # A probe made with other settings is not silently mixed in.
    code = _study(setup, out, extra=("--probe-epochs", "2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "this finished probe was made with other settings" in err[0], err
    print(err[0])


def test_study_probe_refuses_impossible_combinations_in_one_line(setup, tmp_path, capsys):
    from keras_ssl3d.data.synthetic import make_fundus_like

    make_fundus_like(tmp_path / "fundus", n=10, size=32, seed=0)
    out = tmp_path / "out"
    code = run_cli(cli, ["study", "--data", str(tmp_path / "fundus"), "--encoders", "none", "--out", str(out),
                         "--probe-epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("Error: --probe-epochs: the frozen-encoder probe "
                                                             "needs 3D segmentation data"), err
    print(err[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fundus"]  # nothing written, nothing cached

    code = _study(setup, tmp_path / "named", encoders=f"random={setup / 'enc_a'}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'random' names a probe baseline" in err[0], err
    print(err[0])
    assert not (tmp_path / "named").exists()


def test_probe_subjects_are_the_study_runs_and_a_mismatch_is_refused(tmp_path):
    """The probe's split fields are always the study's, and its subjects are checked against each run's."""
    from types import SimpleNamespace

    from keras_ssl3d.data.splits import label_subset, split_indices, split_test
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.finetune.probe import ProbeSettings
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study_probe import StudyProbes

    class Data(SimpleNamespace):
        def __len__(self):
            return len(self.subject_ids)

    data = Data(task="segmentation", subject_ids=[f"s{i}" for i in range(12)])
    settings = FinetuneSettings(test_fraction=0.25, val_fraction=0.3, split_seed=4)
    probes = StudyProbes(data, tmp_path, settings, ProbeSettings(epochs=3, split_seed=9, test_fraction=0.5),
                         [("scratch", "none")])
    ps = probes.settings_for(0.5, 2)
    assert (ps.split_seed, ps.test_fraction, ps.val_fraction, ps.label_fraction, ps.seed, ps.epochs) == (
        4, 0.25, 0.3, 0.5, 2, 3)
    # the runner's split (runner.run_finetune) of this subset
    rest, test = split_test(12, 0.25, 4)
    pool = rest[split_indices(len(rest), 0.3, 4)[0]]
    train = label_subset(pool, 0.5, 2)
    run = tmp_path / "run"
    run.mkdir()
    config = {"train_subjects": [f"s{i}" for i in train], "test_subjects": [f"s{i}" for i in test]}
    (run / "result.json").write_text(json.dumps({"config": config}))
    assert probes._subjects(ps, [run]) == (config["train_subjects"], config["test_subjects"])
    (run / "result.json").write_text(json.dumps({"config": dict(config, train_subjects=config["train_subjects"][1:])}))
    with pytest.raises(ConfigError, match="run: this run's train/test subjects are not those the probe would use"):
        probes._subjects(ps, [run])
