"""Converged comparisons: patience, poly lr, and the study's convergence speed against hand computations."""

import csv
import json
import math

import keras
import numpy as np
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.finetune.callbacks import PolyDecay
from keras_ssl3d.finetune.convergence import (compare_speeds, patience_stop, poly_lr, run_speeds, speed_markdown,
                                              steps_to_reach)
from keras_ssl3d.finetune.statistics import paired_comparison, read_runs_csv
from keras_ssl3d.finetune.runs_table import COLUMNS, write_runs_csv
from keras_ssl3d.finetune.study import summary_markdown

pytestmark = pytest.mark.multibackend


# ------------------------------------------------------------------ poly schedule


def test_cli_schedules_are_the_library_ones():
    from keras_ssl3d.cli.convergence_options import LR_SCHEDULES
    from keras_ssl3d.finetune.convergence import LR_SCHEDULES as LIBRARY

    assert LR_SCHEDULES == LIBRARY


def test_poly_values_by_hand():
    assert poly_lr(0.01, 0, 10) == 0.01
    assert poly_lr(0.01, 5, 10) == pytest.approx(0.01 * 0.5 ** 0.9)  # 0.0053589...
    assert poly_lr(0.01, 5, 10) == pytest.approx(0.005358867, rel=1e-6)
    assert poly_lr(0.01, 9, 10) == pytest.approx(0.01 * 0.1 ** 0.9)  # 0.0012589...
    assert poly_lr(1e-4, 3, 4) == pytest.approx(1e-4 * 0.25 ** 0.9)


def test_poly_decay_sets_the_optimizer_rate_each_epoch_and_after_a_resume():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[PolyDecay(0.01, 4), Record()])
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[PolyDecay(0.01, 4), Record()])  # resumed
    assert seen == pytest.approx([0.01, 0.01 * 0.75 ** 0.9, 0.01 * 0.5 ** 0.9, 0.01 * 0.25 ** 0.9], rel=1e-6)


# ------------------------------------------------------------------ patience


def _rows(values):
    return [{"epoch": e, "val": v} for e, v in enumerate(values, start=1)]


def test_patience_by_hand():
    # best at epoch 2 (0.5); epochs 3 and 4 do not improve (a tie is no improvement) -> stops at 4
    assert patience_stop(_rows([0.1, 0.5, 0.4, 0.5, 0.9]), "val", 2) == 4
    assert patience_stop(_rows([0.1, 0.5, 0.4, 0.6, 0.5]), "val", 2) is None  # improved at 4: not yet
    assert patience_stop(_rows([0.1, 0.5, 0.4, 0.6, 0.5, 0.5]), "val", 2) == 6
    # warm-up: epochs 1..3 never count; best 0.5 at 2, counting starts after 3 -> stops at 3 + 2
    assert patience_stop(_rows([0.1, 0.5, 0.4, 0.4, 0.4]), "val", 2, start_epoch=3) == 5
    assert patience_stop(_rows([0.1, math.nan, 0.05]), "val", 2) == 3  # NaN never improves
    assert patience_stop(_rows([0.1, 0.0]), "val", None) is None


# ------------------------------------------------------------------ early stopping on a tiny run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from keras_ssl3d.data.synthetic import make_brats_like

    return make_brats_like(tmp_path_factory.mktemp("conv") / "data", n_subjects=4, shape=(12, 12, 10), seed=0)


def _finetune(data, out, *extra):
    # lr 1e-12 and no normalisation: the weights (and so the validation score) never change, so the score
    # stops improving after epoch 1 and the stop epoch is known in advance: 1 + patience
    return ["finetune", "--data", str(data), "--encoder", "none", "--out", str(out), "--filters", "4,8",
            "--norm", "none", "--size", "8", "--strategy", "full", "--lr", "1e-12", "--val-fraction", "0.34",
            "--tensorboard", "none", "--verbose", "0", *extra]


def _epochs(run):
    with open(run / "history.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_early_stop_after_patience_and_resume_keeps_the_patience_state(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    # 2 epochs of at most 2: patience 3 not met -> not converged, at its maximum
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "2", "--patience", "3")) == 0
    out = capsys.readouterr().out
    assert "Not converged: reached --epochs 2 before 3 epoch(s) without improvement of val_mean_dice" in out
    result = json.loads((run / "result.json").read_text())
    assert (result["converged"], result["stopped_epoch"], result["max_epochs"]) == (False, 2, 2)
    assert json.loads((run / "run.json").read_text())["converged"] is False
    assert result["config"]["patience"] == 3 and (result["train_size"], result["steps_per_epoch"]) == (3, 2)

    # resumed with a larger maximum: the two epochs without improvement so far count -> stops at 1 + 3 = 4
    # (a patience restarted at the resume would stop at 2 + 3 = 5)
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "10", "--patience", "3", "--resume")) == 0
    out = capsys.readouterr().out
    assert "Converged: val_mean_dice did not improve for 3 epoch(s); stopped at epoch 4 of at most 10" in out
    assert "at epoch 1 of 4" in out  # the selected epoch: the first best
    assert _epochs(run) == [1, 2, 3, 4]
    result = json.loads((run / "result.json").read_text())
    assert (result["converged"], result["stopped_epoch"], result["selected_epoch"]) == (True, 4, 1)
    assert json.loads((run / "run.json").read_text())["converged"] is True

    # a converged run resumed again trains nothing more
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "10", "--patience", "3", "--resume")) == 0
    assert _epochs(run) == [1, 2, 3, 4] and "stopped at epoch 4 of at most 10" in capsys.readouterr().out

    # another patience is another run: refused in one line
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "10", "--patience", "5", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume with different settings (patience)" in err[0]


def test_patience_needs_validation_subjects(tiny_data, tmp_path, capsys):
    code = run_cli(cli, _finetune(tiny_data, tmp_path / "run", "--epochs", "2", "--patience", "1",
                                  "--val-fraction", "0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["Error: --patience watches the validation score: it needs validation subjects "
                                 "(--val-fraction > 0)"]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ convergence speed on a fixed study


# (label, repeat) -> validation curve; scratch's selected epochs: repeat 0 -> 3 (0.60), 1 -> 2 (0.50), 2 -> 4 (0.80)
CURVES = {
    ("scratch", 0): [0.10, 0.40, 0.60, 0.55], ("scratch", 1): [0.20, 0.50, 0.45, 0.40],
    ("scratch", 2): [0.10, 0.30, 0.70, 0.80],
    ("exemplar", 0): [0.30, 0.55, 0.58, 0.50], ("exemplar", 1): [0.10, 0.20, 0.30, 0.46],
    ("exemplar", 2): [0.20, 0.30, 0.40, 0.50],
}
SELECTED = {("scratch", 0): 3, ("scratch", 1): 2, ("scratch", 2): 4,
            ("exemplar", 0): 3, ("exemplar", 1): 4, ("exemplar", 2): 4}
STEPS_PER_EPOCH = {"scratch": 5, "exemplar": 5}
CONVERGED = {("scratch", 0): True, ("scratch", 1): True, ("scratch", 2): False,
             ("exemplar", 0): True, ("exemplar", 1): False, ("exemplar", 2): False}


def _write_study(root):
    rows = []
    for (label, repeat), curve in CURVES.items():
        run_dir = root / "runs" / label / "fraction_0.5" / f"repeat_{repeat}"
        run_dir.mkdir(parents=True)
        lines = ["epoch,loss,val_loss,val_mean_dice"] + [f"{e},1.0,1.0,{v}" for e, v in enumerate(curve, 1)]
        (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
        rows.append({"encoder": label, "label": label, "strategy": "full", "fraction": 0.5, "repeat": repeat,
                     "seed": repeat, "train_size": 10, "score": 0.5, "score_name": "mean_dice",
                     "selected_epoch": SELECTED[(label, repeat)], "epochs": 4, "run_dir": str(run_dir),
                     "steps_per_epoch": STEPS_PER_EPOCH[label], "converged": CONVERGED[(label, repeat)],
                     "stopped_epoch": 4, "test_size": 3})
    write_runs_csv(root / "runs.csv", rows)
    return root / "runs.csv"


def test_convergence_speed_and_its_paired_statistics_by_hand(tmp_path):
    rows = read_runs_csv(_write_study(tmp_path))
    assert set(("steps_per_epoch", "converged", "stopped_epoch")) <= set(COLUMNS)
    speeds = {(s["label"], s["repeat"]): s for s in run_speeds(rows, 0.9)}
    # targets 0.9 x scratch's selected score: 0.54, 0.45, 0.72
    assert [speeds[("scratch", r)]["target"] for r in range(3)] == pytest.approx([0.54, 0.45, 0.72])
    # scratch: 0.60 at epoch 3 -> 15 steps; 0.50 at epoch 2 -> 10; 0.80 at epoch 4 -> 20
    # exemplar: 0.55 >= 0.54 at epoch 2 -> 10; 0.46 >= 0.45 at epoch 4 -> 20; never 0.72 -> 4 x 5 = 20, flagged
    assert [speeds[("scratch", r)]["steps"] for r in range(3)] == [15, 10, 20]
    assert [speeds[("exemplar", r)]["steps"] for r in range(3)] == [10, 20, 20]
    assert [speeds[("exemplar", r)]["reached"] for r in range(3)] == [True, True, False]
    assert all(speeds[("scratch", r)]["reached"] for r in range(3))

    c = compare_speeds(list(speeds.values()))[("exemplar", 0.5)]
    # scratch minus exemplar: 15 - 10 = 5, 10 - 20 = -10, 20 - 20 = 0 -> mean -5/3, sd sqrt(175/3 / 2)...
    diffs = np.array([5.0, -10.0, 0.0])
    assert (c.n, c.mean, c.sd) == (3, pytest.approx(-5 / 3), pytest.approx(np.sqrt(((diffs + 5 / 3) ** 2).sum() / 2)))
    assert c.sd == pytest.approx(7.6376262, rel=1e-6)
    assert c == paired_comparison([15, 10, 20], [10, 20, 20])
    assert c.verdict == "not distinguishable"

    lines = speed_markdown(rows, 0.9)
    assert "| 50 | scratch | 15.0 ± 5.0 (n=3) | — |" in lines
    assert "| 50 | exemplar | 16.7 ± 5.8 (n=3, 1 not reached) | -1.667 ± 7.638 " in "\n".join(lines)

    # a stricter target: 1.0 x scratch; exemplar reaches 0.60 / 0.50 / 0.80 never, once, never
    strict = {(s["label"], s["repeat"]): s["steps"] for s in run_speeds(rows, 1.0)}
    assert [strict[("exemplar", r)] for r in range(3)] == [20, 20, 20]
    assert steps_to_reach([0.1, 0.2], 0.3, 7) == (14, False)


def test_summary_says_which_runs_hit_their_maximum(tmp_path):
    from keras_ssl3d.finetune.runner import FinetuneSettings

    rows = read_runs_csv(_write_study(tmp_path))
    settings = FinetuneSettings(patience=3, epochs=4, lr=1e-4, warmup_epochs=0, test_fraction=0.2).resolved(
        "segmentation")
    text = summary_markdown(rows, settings, "segmentation", speed_fraction=0.9)
    table = [line for line in text.splitlines() if line.startswith("| 50 |")][0]
    assert table == "| 50 | 0.5000 ± 0.0000 (n=3) (1/3 hit --epochs) | 0.5000 ± 0.0000 (n=3) (2/3 hit --epochs) |"
    assert "## Convergence speed" in text and "0.9 x the scratch arm's converged" in text
    assert "until 3 epochs without improvement" in text


def test_epoch_indices_pass_whole_times_over_the_labelled_subjects():
    from keras_ssl3d.finetune.runner import epoch_indices

    train = np.array([4, 7, 9])
    assert epoch_indices(train, None, 2).tolist() == [4, 7, 9]
    assert epoch_indices(train, 1, 2).tolist() == [4, 7, 9]  # never less than one pass
    # 10 steps of 2 = 20 samples ~ round(20 / 3) = 7 passes
    assert epoch_indices(train, 10, 2).tolist() == [4, 7, 9] * 7


def test_steps_per_epoch_makes_longer_epochs_and_is_recorded(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "1", "--steps-per-epoch", "6")) == 0
    result = json.loads((run / "result.json").read_text())
    # 3 training subjects, batch 2: 6 steps = 12 samples = 4 passes = 12 subjects a epoch
    assert (result["train_size"], result["steps_per_epoch"]) == (3, 6)
    assert result["config"]["steps_per_epoch"] == 6
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "2", "--steps-per-epoch", "3", "--resume")) == 2
    assert "cannot resume with different settings (steps_per_epoch" in capsys.readouterr().err


def test_min_epochs_delay_the_patience():
    from keras_ssl3d.finetune.convergence import patience_start

    assert patience_start("full", 5) == 0 and patience_start("warmup", 5) == 5
    assert patience_start("full", 0, min_epochs=10) == 10 and patience_start("warmup", 12, min_epochs=10) == 12
    # an early peak (epoch 2) followed by a dip: without a minimum the run stops at 2 + 3 = 5
    rows = _rows([0.1, 0.6, 0.3, 0.4, 0.5, 0.55, 0.58, 0.7, 0.7, 0.7, 0.7])
    assert patience_stop(rows, "val", 3) == 5
    assert patience_stop(rows, "val", 3, start_epoch=patience_start("full", 0, min_epochs=6)) == 11


def test_min_epochs_on_a_run(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    # the score never changes (lr 1e-12): patience 1 alone stops at epoch 2; --min-epochs 3 -> epoch 4
    assert run_cli(cli, _finetune(tiny_data, run, "--epochs", "10", "--patience", "1", "--min-epochs", "3")) == 0
    assert _epochs(run) == [1, 2, 3, 4]
    assert json.loads((run / "run.json").read_text())["config"]["min_epochs"] == 3
    assert run_cli(cli, _finetune(tiny_data, tmp_path / "r2", "--epochs", "2", "--patience", "1",
                                  "--min-epochs", "3")) == 2
    assert "--min-epochs 3 is more than --epochs 2" in capsys.readouterr().err
