"""The memory planner: exact parameter counts, the estimate against the measured peaks, the budget
choice, and the CLI (``keras-ssl3d plan``, ``pretrain --memory-budget``) with one-line refusals."""

import importlib.util
import sys
from pathlib import Path

import keras
import pytest

from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.tasks.runner import build_task
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.models import Encoder3D
from keras_ssl3d.tasks import TASKS
from keras_ssl3d.tasks import memory_plan as mp

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("filters,in_channels,norm", [((4, 8), 1, "batch"), ((3, 5, 7), 4, "group"),
                                                     ((6,), 2, "none"), ((4, 8, 16), 2, "instance")])
def test_encoder_parameters_are_exact(filters, in_channels, norm):
    encoder = Encoder3D(in_channels=in_channels, filters=filters, norm=norm)
    assert mp.encoder_parameters(filters, in_channels, norm) == encoder.count_params()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_parameters_are_exact(task):
    options = dict(TASKS[task].small_hparams)
    filters, size, channels = (4, 8, 16), 32, 2
    model = build_task(task, 3, channels, size, filters=filters, task_options=options)
    assert mp.estimate_parameters(filters, channels, task, task_options=options) == model.count_params()


def test_absurd_filters_are_counted_without_building():
    assert mp.estimate_parameters((8, 16, 100000)) > 2e11  # 27 * 16 * 1e5 + 27 * 1e10 weights


def _fit_module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("ssl3d_memory_plan_fit", BENCH / "memory_plan_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_estimate_within_25_percent_of_every_measured_fp32_peak():
    rows = [r for r in _fit_module().measurements() if r[5] == "float32" and r[1] in (64, 128)]
    assert {r[0] for r in rows} >= {"cpc", "rpl", "jigsaw", "rotation", "exemplar"} and len(rows) >= 20
    for task, size, batch, remat, micro, precision, gb, source in rows:
        e = mp.estimate(task, size, batch, precision=precision, remat=remat, micro_batches=micro)
        assert abs(e.peak_bytes / 1e9 - gb) / gb <= 0.25, (task, size, batch, remat, micro, gb, e.describe())


def test_micro_batches_and_remat_lower_the_estimate():
    none = mp.estimate("exemplar", 128, 2)
    assert none.inputs_per_step == 4 and none.input_shape == (128, 128, 128)
    remat = mp.estimate("exemplar", 128, 2, remat=True)
    micro = mp.estimate("exemplar", 128, 2, micro_batches=4)
    assert micro.peak_bytes < remat.peak_bytes < none.peak_bytes
    assert mp.estimate("exemplar", 128, 2, precision="mixed_bfloat16").peak_bytes < none.peak_bytes
    assert mp.encoder_inputs("jigsaw", 128) == (27, (39, 39, 39))
    assert mp.encoder_inputs("cpc", 128) == (64, (29, 29, 29))
    assert mp.encoder_inputs("rpl", 64, {"grid": 3, "jitter": 1}) == (2, (20, 20, 20))


def test_plan_picks_the_cheapest_remedy_that_fits():
    assert mp.plan("rotation", 64, 2, 8e9).remedy == "no remedy"
    chosen = mp.plan("exemplar", 128, 2, 8e9)
    assert (chosen.remat, chosen.micro_batches) == (False, 4) and chosen.peak_bytes <= 8e9
    # what the user asked for is kept: --remat stays on, --micro-batches 5 is not replaced by 6
    assert mp.plan("rotation", 64, 2, 8e9, remat=True).remat
    assert mp.plan("jigsaw", 128, 2, 8e9, micro_batches=5).micro_batches == 5
    # genesis cannot micro-batch: remat or nothing
    genesis = mp.plan("genesis", 128, 1, 8.5e9, micro_allowed=False)
    assert (genesis.remat, genesis.micro_batches) == (True, 1)
    with pytest.raises(ConfigError, match=r"--memory-budget 2.00 GB: nothing fits; .*exemplar 128\^3 batch 2"):
        mp.plan("exemplar", 128, 2, 2e9)


@pytest.mark.parametrize("text,value", [("8GB", 8e9), ("8", 8e9), ("7.5GiB", 7.5 * 2 ** 30), ("512MB", 512e6),
                                        ("2 gb", 2e9)])
def test_parse_size(text, value):
    assert mp.parse_size(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8XB", "", "-1GB", "0", "lots"])
def test_parse_size_refuses_in_one_line(text):
    with pytest.raises(ConfigError, match="--memory-budget"):
        mp.parse_size(text)


def test_auto_budget_without_a_gpu_is_a_share_of_host_memory(monkeypatch):
    monkeypatch.setattr(mp, "free_accelerator_bytes", lambda: None)
    budget, source = mp.resolve_budget("auto")
    assert budget == pytest.approx(mp.HOST_SHARE * mp.available_host_bytes(), rel=0.05)
    assert "host" in source
    monkeypatch.setattr(mp, "free_accelerator_bytes", lambda: 40e9)
    assert mp.resolve_budget("auto") == (40e9, "auto: the GPU's free memory (nvidia-smi)")


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    return err


def test_plan_command_prints_the_estimate_and_the_choice(capsys):
    assert run_cli(cli, ["plan", "--task", "exemplar", "--size", "128", "--batch-size", "2",
                         "--memory-budget", "8GB"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("exemplar 128^3 batch 2 float32, no remedy: ~")
    assert out[1].startswith("Memory budget 8.00 GB (given): --micro-batches 4 (estimated peak")


@pytest.mark.parametrize("argv,message", [
    (["--task", "exemplar", "--memory-budget", "1GB"], "Error: --memory-budget 1.00 GB: nothing fits;"),
    (["--task", "rotation", "--filters", "8,16,100000", "--memory-budget", "16GB"],
     "270148.42 M parameters"),
    (["--task", "rotation", "--memory-budget", "8XB"], "Error: --memory-budget '8XB': give auto or a size"),
    (["--task", "cpc", "--size", "8"], "Error: cpc cannot be planned for --size 8:"),
    (["--task", "exemplar", "--task-option", "augment_on=gpu"],
     "Error: --task-option augment_on=gpu: exemplar's augment_on must be one of host, device, auto"),
])
def test_plan_command_refuses_in_one_line(argv, message, capsys):
    assert run_cli(cli, ["plan", *argv]) == 2
    assert message in _one_line_error(capsys)


def test_pretrain_with_a_budget_says_what_it_chose(tmp_path, capsys):
    from keras_ssl3d.data.synthetic import make_brats_like

    data = make_brats_like(tmp_path / "data", n_subjects=2, shape=(12, 12, 10), seed=0)
    argv = ["pretrain", "--task", "rotation", "--data", str(data), "--size", "8", "--filters", "2,4",
            "--epochs", "1", "--batch-size", "2"]
    assert run_cli(cli, [*argv, "--out", str(tmp_path / "run"), "--memory-budget", "4GB"]) == 0
    assert "Memory budget 4.00 GB (given): no remedy (estimated peak" in capsys.readouterr().out
    assert run_cli(cli, [*argv, "--out", str(tmp_path / "run2"), "--memory-budget", "0.5GB"]) == 2
    assert "nothing fits" in _one_line_error(capsys)
    assert not (tmp_path / "run2").exists()  # refused before anything was written
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(cli, [*argv, "--out", str(tmp_path / "run3"), "--memory-budget", "8XB"]) == 2
    assert _one_line_error(capsys) == "Error: --memory-budget '8XB': give auto or a size such as 8GB, 7.5GiB or 512MB"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # refused while parsing: no data read, no cache


def test_segmentation_estimate_counts_the_unet_exactly():
    from keras_ssl3d.models import Segmenter3D

    model = Segmenter3D(Encoder3D(in_channels=3, filters=(4, 8, 16)), num_classes=5)
    assert mp.estimate_parameters((4, 8, 16), 3, "segmentation", num_classes=5) == model.count_params()
    e = mp.estimate("segmentation", 64, 2, filters=(8, 16), in_channels=4, num_classes=4)
    # benchmarks/streaming.py measured finetune 64^3 x 4, 8-16 encoder, batch 2 at 1374 MiB VmRSS
    assert abs(e.peak_bytes - 1374 * 2 ** 20) / (1374 * 2 ** 20) <= 0.25


def test_finetune_with_a_budget_says_what_it_chose(tmp_path, capsys):
    from keras_ssl3d.data.synthetic import make_brats_like

    data = make_brats_like(tmp_path / "data", n_subjects=3, shape=(12, 12, 10), seed=0)
    argv = ["finetune", "--data", str(data), "--encoder", "none", "--size", "8", "--filters", "2,4",
            "--epochs", "1", "--batch-size", "1", "--verbose", "0", "--tensorboard", "none"]
    assert run_cli(cli, [*argv, "--out", str(tmp_path / "run"), "--memory-budget", "4GB"]) == 0
    out = capsys.readouterr().out
    assert "Memory budget 4.00 GB (given): no remedy (estimated peak" in out and "encoder widths 2,4 (--filters)" in out
    assert run_cli(cli, [*argv, "--out", str(tmp_path / "run2"), "--memory-budget", "0.2GB"]) == 2
    assert "nothing fits; the most frugal setting needs segmentation 8^3 batch 1" in _one_line_error(capsys)
    assert not (tmp_path / "run2").exists()
