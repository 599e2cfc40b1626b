"""End to end on synthetic BraTS-like data: pretrain -> finetune (pretrained and scratch) -> evaluate -> predict."""

import json

import nibabel as nib
import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.data.splits import label_subset, split_indices
from keras_ssl3d.finetune.runner import FinetuneSettings

TINY = ["--size", "32", "--batch-size", "2", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    from keras_ssl3d.data.synthetic import make_brats_like

    root = tmp_path_factory.mktemp("ft")
    # Not a cube, and not 32: training resizes to 32^3, predict must restore this geometry.
    make_brats_like(root / "brats", n_subjects=5, shape=(36, 32, 28), seed=0)
    return root


@pytest.fixture(scope="module")
def pretrained(brats):
    out = brats / "pretrain"
    code = run_cli(cli, ["pretrain", "--task", "rotation", "--data", str(brats / "brats"), "--out", str(out),
                         "--size", "32", "--filters", "4,8", "--epochs", "1"])
    assert code == 0
    assert (out / "encoder" / "metadata.json").is_file()
    return out


def test_split_and_label_subsets_are_seeded():
    train, val = split_indices(10, 0.2, split_seed=0)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    np.testing.assert_array_equal(split_indices(10, 0.2, 0)[1], val)  # deterministic
    a = label_subset(train, 0.25, seed=0)
    b = label_subset(train, 0.5, seed=0)
    assert len(a) == 2 and len(b) == 4 and set(a) <= set(b)  # nested across fractions
    subsets = {tuple(label_subset(train, 0.25, seed=s)) for s in range(6)}
    assert len(subsets) > 1  # depends on the seed, not on file order
    assert tuple(a) != tuple(sorted(train)[:2]) or tuple(label_subset(train, 0.25, seed=1)) != tuple(a)
    assert len(label_subset(train, 0.01, seed=0)) == 1


def test_finetune_pretrained_then_evaluate_and_predict(brats, pretrained, capsys):
    run = brats / "run_pre"
    code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--encoder", str(pretrained), "--out", str(run),
                         "--strategy", "warmup", "--warmup-epochs", "1", "--epochs", "2", "--label-fraction", "0.5",
                         "--verbose", "0", *TINY])
    assert code == 0
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["task"] == "segmentation" and meta["encoder_source"] == str(pretrained)
    assert meta["label_fraction"] == 0.5 and meta["strategy"] == "warmup"
    assert meta["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert meta["input_size"] == [32, 32, 32] and meta["num_classes"] == 4
    assert len(meta["train_subjects"]) == 2 and len(meta["val_subjects"]) == 1  # 4 left after val, half labelled
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and "val_mean_dice" in history[0] and len(history) == 3
    # model/ is the best validation epoch (the first on ties), and holds the weights kept in best/
    result = json.loads((run / "result.json").read_text())
    assert meta["selected_epoch"] == result["selected_epoch"] == int(np.argmax(result["curve"])) + 1
    assert meta["selection"] == "best validation val_mean_dice" and result["config"]["select"] == "best"
    assert "test_subjects" not in result["config"] and result["test_size"] == 0  # finetune: no test split
    _assert_same_weights(run / "model", run / "best" / "model.weights.h5")

    out_json = brats / "eval.json"
    code = run_cli(cli, ["evaluate", "--model", str(run), "--data", str(brats / "brats"), "--out", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "whole_tumor" in printed and "mean (no background)" in printed
    scores = json.loads(out_json.read_text())
    assert scores["num_subjects"] == 5
    assert set(scores["regions"]) == {"whole_tumor", "tumor_core", "enhancing_tumor"}
    assert 0.0 <= scores["mean_dice"] <= 1.0 and len(scores["per_subject"]) == 5
    assert set(scores["hd95"]) == set(scores["msd"]) == set(scores["regions"]) and "HD95" in printed
    assert all(len(row["spacing"]) == 3 and row["hd95"]["whole_tumor"] >= 0 for row in scores["per_subject"])

    src = brats / "brats" / "BraTS_Synth_001"
    code = run_cli(cli, ["predict", "--model", str(run), str(src), "--out", str(brats / "pred")])
    assert code == 0
    written = nib.load(str(brats / "pred" / "BraTS_Synth_001_pred.nii.gz"))
    reference = nib.load(str(src / "BraTS_Synth_001_t1.nii.gz"))
    assert written.shape == reference.shape == (36, 32, 28)
    np.testing.assert_allclose(written.affine, reference.affine)
    values = set(np.unique(np.asarray(written.dataobj)).tolist())
    assert values <= {0, 1, 2, 4}  # stored class 3 is written back as BraTS 4


def _assert_same_weights(preset, weights_file):
    from keras_ssl3d.finetune.model import load_pretrained_model

    saved = load_pretrained_model(str(preset))
    reference = load_pretrained_model(str(preset))
    reference.load_weights(str(weights_file))
    assert len(saved.weights) == len(reference.weights) > 0
    for a, b in zip(saved.weights, reference.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finetune_from_scratch_and_errors(brats, capsys):
    run = brats / "run_scratch"
    code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--encoder", "none", "--filters", "4,8",
                         "--out", str(run), "--epochs", "1", "--strategy", "full", "--verbose", "0", *TINY])
    assert code == 0
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["encoder_source"] == "none" and len(meta["train_subjects"]) == 4
    result = json.loads((run / "result.json").read_text())
    assert len(result["curve"]) == 1 and 0.0 <= result["final_score"] <= 1.0
    # Settings added later are recorded only when set, so runs made before them still resume.
    config = json.loads((run / "run.json").read_text())["config"]
    assert not {"augment", "checkpoint_every", "checkpoint_seconds"} & set(config)
    # The raw folder was preprocessed once into a cache beside the run folder, and is streamed from it.
    caches = [c for c in (brats / "keras-ssl3d-cache").iterdir() if c.name.startswith("brats-32-")
              and "crop" not in c.name]
    assert len(caches) == 1 and len(list((caches[0] / "images").glob("*.npy"))) == 5
    stamps = {p: p.stat().st_mtime_ns for p in caches[0].rglob("*.npy")}
    capsys.readouterr()

    # the run folder is not overwritten by accident; the cache is reused, not written again
    code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--encoder", "none", "--filters", "4,8",
                         "--out", str(run), "--epochs", "1", *TINY])
    captured = capsys.readouterr()
    assert code == 2 and "already holds a run" in captured.err
    assert f"Using the cache {caches[0]}" in captured.out
    assert {p: p.stat().st_mtime_ns for p in caches[0].rglob("*.npy")} == stamps

    for args, message in [
        (["--encoder", str(brats / "missing"), "--out", str(brats / "x1")], "does not exist"),
        (["--encoder", "none", "--label-fraction", "0", "--out", str(brats / "x2")],
         "'--label-fraction': 0.0 is not in the range 0<x<=1"),
        (["--encoder", "none", "--filters", "4,x", "--out", str(brats / "x3")], "--filters"),
        (["--encoder", "none", "--filters", "4,8,16,32", "--size", "36", "--out", str(brats / "x4")], "multiple"),
    ]:
        code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--epochs", "1", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1

    code = run_cli(cli, ["evaluate", "--model", str(brats / "nowhere"), "--data", str(brats / "brats")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = run_cli(cli, ["predict", "--model", str(run), str(brats / "brats" / "nothing.nii.gz"), "--out",
                         str(brats / "p2")])
    assert code == 2 and "does not exist" in capsys.readouterr().err

    # A run made before best-epoch selection (no "select" in run.json) still resumes, and keeps its rule:
    # the last epoch. Here: drop the key, as such a run has it, and train it on to 2 epochs.
    record = json.loads((run / "run.json").read_text())
    assert record["config"].pop("select") == "best"
    (run / "run.json").write_text(json.dumps(record))
    code = run_cli(cli, ["finetune", "--data", str(brats / "brats"), "--encoder", "none", "--filters", "4,8",
                         "--out", str(run), "--epochs", "2", "--strategy", "full", "--resume", *TINY])
    assert code == 0, capsys.readouterr().err
    result = json.loads((run / "result.json").read_text())
    assert "select" not in json.loads((run / "run.json").read_text())["config"] and len(result["curve"]) == 2
    assert result["selected_epoch"] == 2 and result["selection"] == "last epoch"


def test_finetune_2d_grading_and_evaluate(tmp_path, capsys):
    from keras_ssl3d.data.synthetic import make_fundus_like

    make_fundus_like(tmp_path / "fundus", n=10, size=32, seed=0)
    run = tmp_path / "run2d"
    code = run_cli(cli, ["finetune", "--data", str(tmp_path / "fundus"), "--encoder", "none", "--filters", "1,1",
                         "--out", str(run), "--size", "32", "--epochs", "2", "--warmup-epochs", "1",
                         "--batch-size", "4", "--lr", "1e-3", "--verbose", "0"])
    assert code == 0
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["task"] == "classification" and meta["num_classes"] == 5 and meta["input_size"] == [32, 32]
    assert "val_kappa" in (run / "history.csv").read_text().splitlines()[0]
    capsys.readouterr()
    code = run_cli(cli, ["evaluate", "--model", str(run), "--data", str(tmp_path / "fundus"), "--subjects", "val",
                         "--out", str(tmp_path / "e.json")])
    assert code == 0 and "quadratic kappa" in capsys.readouterr().out
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["num_subjects"] == 2 and -1.0 <= scores["kappa"] <= 1.0 and 0.0 <= scores["accuracy"] <= 1.0
    code = run_cli(cli, ["predict", "--model", str(run), str(tmp_path / "fundus"), "--out", str(tmp_path / "p")])
    assert code == 2 and "2D classifier" in capsys.readouterr().err


def test_augmented_run_with_sparse_checkpoints_resumes_to_the_uninterrupted_weights(brats, monkeypatch, capsys):
    from keras_ssl3d.finetune import augment
    from keras_ssl3d.finetune.model import load_pretrained_model
    from keras_ssl3d.training import run as run_module

    sizes = []
    real_augment = augment.augment_batch
    monkeypatch.setattr(augment, "augment_batch", lambda images, labels, rng, mode:
                        sizes.append(len(images)) or real_augment(images, labels, rng, mode=mode))
    args = ["finetune", "--data", str(brats / "brats"), "--encoder", "none", "--filters", "4,8", "--epochs", "4",
            "--strategy", "full", "--verbose", "0", "--tensorboard", "none", "--augment", "flip_intensity",
            "--checkpoint-every", "2", *TINY]
    assert run_cli(cli, [*args, "--out", str(brats / "aug_a")]) == 0
    # 4 training subjects in batches of 2 are augmented; the 1 validation subject (batches of 1) never is
    assert sizes and set(sizes) == {2}
    record = json.loads((brats / "aug_a" / "run.json").read_text())
    assert record["config"]["augment"] == "flip_intensity" and record["config"]["checkpoint_every"] == 2
    assert sorted(p.name for p in (brats / "aug_a" / "checkpoints").glob("epoch-*")) == ["epoch-0002", "epoch-0004"]

    real_seed = run_module._seed_epoch

    def power_cut(value):  # the epoch's seed is seed * 100003 + epoch = epoch for --seed 0
        if value == 3:
            raise RuntimeError("power cut")
        real_seed(value)

    monkeypatch.setattr(run_module, "_seed_epoch", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        run_cli(cli, [*args, "--out", str(brats / "aug_b")])
    assert len((brats / "aug_b" / "history.csv").read_text().splitlines()) == 4  # 3 epochs done...
    assert (brats / "aug_b" / "checkpoints" / "latest").read_text().strip() == "epoch-0002"  # ...2 saved
    monkeypatch.setattr(run_module, "_seed_epoch", real_seed)
    refused = run_cli(cli, [*args[:-len(TINY) - 4], *TINY, "--out", str(brats / "aug_b"), "--resume"])
    assert refused == 2 and "different settings (augment)" in capsys.readouterr().err  # --checkpoint-every may change
    assert run_cli(cli, [*args, "--out", str(brats / "aug_b"), "--resume"]) == 0
    history = [line.split(",") for line in (brats / "aug_b" / "history.csv").read_text().splitlines()]
    reference = [line.split(",") for line in (brats / "aug_a" / "history.csv").read_text().splitlines()]
    assert history[0] == reference[0] and len(history) == 5  # complete: the repeated epochs 3 and 4 rewritten
    np.testing.assert_allclose(np.array(history[1:], float), np.array(reference[1:], float), rtol=1e-4, atol=1e-5)
    straight = load_pretrained_model(brats / "aug_a" / "model").get_weights()
    resumed = load_pretrained_model(brats / "aug_b" / "model").get_weights()
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_study_passes_augment_to_every_run(brats, monkeypatch):
    from keras_ssl3d.finetune import study

    seen = []

    def fake_run_study(data, encoders, fractions, repeats, settings, out, **kwargs):
        seen.append(settings.augment)
        (brats / "study_aug").mkdir(exist_ok=True)
        (brats / "study_aug" / "summary.md").write_text("summary")
        return []

    monkeypatch.setattr(study, "run_study", fake_run_study)
    code = run_cli(cli, ["study", "--data", str(brats / "brats"), "--encoders", "none", "--out",
                         str(brats / "study_aug"), "--size", "32", "--augment", "flip"])
    assert code == 0 and seen == ["flip"]
    assert "training batches augmented (flip)" in study.summary_markdown([], FinetuneSettings(augment="flip"),
                                                                          "segmentation")
