"""Smoke tests of the benchmark helpers (no timing is asserted): the analytic FLOP counter
against hand computations, the JSON-line plumbing of the runner, and the report's verdicts."""

import importlib.util
import json
import sys
from pathlib import Path

import keras
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name, filename):
    sys.path.insert(0, str(BENCH))  # the scripts import their sibling `common`
    spec = importlib.util.spec_from_file_location(name, BENCH / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("ssl3d_bench_common", "common.py")
runner = _load("ssl3d_bench_run", "run.py")


def _single(layer, shape):
    inputs = keras.Input(shape[1:])
    return keras.Model(inputs, layer(inputs))


def test_conv3d_flops_match_hand_computation():
    # 'same' 3x3x3 conv, 3 -> 5 channels, output 2 x 6x7x8 positions: 2 * 27 * 3 * 5 * 672
    model = _single(keras.layers.Conv3D(5, 3, padding="same"), (2, 6, 7, 8, 3))
    assert common.count_flops(model, (2, 6, 7, 8, 3)).total == 2 * 27 * 3 * 5 * (2 * 6 * 7 * 8) == 544320
    # strided 'valid' 2x2x2 conv, 2 -> 4 channels, output 4^3: 2 * 8 * 2 * 4 * 64
    model = _single(keras.layers.Conv3D(4, 2, strides=2), (1, 8, 8, 8, 2))
    assert common.count_flops(model, (1, 8, 8, 8, 2)).total == 8192
    # Conv2D and Dense
    model = _single(keras.layers.Conv2D(6, 5, padding="valid"), (1, 9, 9, 2))
    assert common.count_flops(model, (1, 9, 9, 2)).total == 2 * 25 * 2 * 6 * 25
    model = _single(keras.layers.Dense(7), (3, 10))
    assert common.count_flops(model, (3, 10)).total == 2 * 10 * 7 * 3


def test_conv3d_transpose_counts_input_positions():
    # each of the 2 x 4^3 input positions scatters a 2x2x2 x (3 -> 5) kernel
    model = _single(keras.layers.Conv3DTranspose(5, 2, strides=2), (2, 4, 4, 4, 3))
    assert common.count_flops(model, (2, 4, 4, 4, 3)).total == 2 * 8 * 3 * 5 * (2 * 64)


def test_nested_residual_blocks_and_encoder():
    from keras_ssl3d.layers.residual_block import ResidualBlock
    from keras_ssl3d.models.encoder3d import Encoder3D

    block = _single(ResidualBlock(4, rank=3), (1, 4, 4, 4, 2))
    conv1, conv2, shortcut = 2 * 27 * 2 * 4 * 64, 2 * 27 * 4 * 4 * 64, 2 * 1 * 2 * 4 * 64
    assert common.count_flops(block, (1, 4, 4, 4, 2)).total == conv1 + conv2 + shortcut

    # Two levels (4, 8 filters) on 8^3: level 1 at 512 positions, max-pool, level 2 at 64.
    encoder = Encoder3D(in_channels=1, filters=(4, 8))
    level1 = 2 * 27 * 1 * 4 * 512 + 2 * 27 * 4 * 4 * 512 + 2 * 1 * 4 * 512
    level2 = 2 * 27 * 4 * 8 * 64 + 2 * 27 * 8 * 8 * 64 + 2 * 4 * 8 * 64
    counter = common.count_flops(encoder, (1, 8, 8, 8, 1))
    assert counter.total == level1 + level2 == 892928
    assert counter.uncounted == []
    assert counter.calls[0]["input_shapes"] == [(1, 8, 8, 8, 1)]


def test_task_model_reports_the_tensor_its_encoder_sees():
    from keras_ssl3d.models.encoder3d import Encoder3D
    from keras_ssl3d.tasks import Jigsaw

    encoder = Encoder3D(in_channels=1, filters=(4, 8))
    task = Jigsaw(encoder=encoder, input_size=32)  # 3x3x3 grid, jitter 3: 27 patches of 7^3
    counter = common.count_flops(task, (2, 27, 7, 7, 7, 1))
    seen = [c["input_shapes"][0] for c in counter.calls if c["model"] == encoder.name]
    assert seen == [(54, 7, 7, 7, 1)]
    encoder_only = common.count_flops(encoder, (54, 7, 7, 7, 1)).total
    assert counter.by_type["Conv3D"] == encoder_only
    assert counter.by_type["Dense"] > 0 and counter.total == encoder_only + counter.by_type["Dense"]


def test_json_lines_parsing_ignores_library_noise():
    text = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() ...",
        json.dumps({"kind": "peak", "best_gflops": 12.5}),
        "{not json",
        "[1, 2]",
        "  " + json.dumps({"kind": "train_step", "step_s": 1.0, "nan": float("nan")}),
    ])
    records = common.parse_json_lines(text)
    assert [r["kind"] for r in records] == ["peak", "train_step"]
    assert records[0]["best_gflops"] == 12.5


def test_subprocess_records_errors_and_timeouts():
    code = "import json; print('noise'); print(json.dumps({'kind': 'x', 'v': 1}), flush=True)"
    records, status, _ = common.run_json_subprocess([sys.executable, "-c", code], timeout_s=30)
    assert status == "ok" and records == [{"kind": "x", "v": 1}]
    records, status, info = common.run_json_subprocess([sys.executable, "-c", code + "; raise SystemExit(3)"],
                                                       timeout_s=30)
    assert status == "error" and info["returncode"] == 3 and records == [{"kind": "x", "v": 1}]
    code = "import json, time; print(json.dumps({'kind': 'early'}), flush=True); time.sleep(60)"
    records, status, _ = common.run_json_subprocess([sys.executable, "-c", code], timeout_s=1.5)
    assert status == "timeout" and records == [{"kind": "early"}]


def test_cpc_grid_fallback_keeps_patches_poolable():
    assert runner.cpc_task_args(128, 5) == ""          # 4x4x4 grid: 29^3 patches >= 16
    assert runner.cpc_task_args(64, 5) == "grid=3"     # 13^3 would vanish after 4 poolings; 18^3 does not


def test_section_budgets_share_the_remaining_time():
    run = runner.Runner(runner.Settings.make(True), "unused.jsonl", budget_s=1000.0)
    run.start_section(["tasks64", "tasks128"], "tasks64")
    share = runner.SECTION_SHARE["tasks64"] / (runner.SECTION_SHARE["tasks64"] + runner.SECTION_SHARE["tasks128"])
    assert abs(run.remaining() - 1000.0 * share) < 5.0
    run.start_section(["tasks64", "tasks128"], "tasks128")  # the last section gets all that is left
    assert abs(run.remaining() - 1000.0) < 5.0


def test_a_section_always_gets_its_floor():
    # peak's share of a 29-min budget is ~17 s, less than the measurement needs: its floor is 60 s
    run = runner.Runner(runner.Settings.make(False), "unused.jsonl", budget_s=29 * 60.0)
    run.start_section(list(runner.SECTIONS), "peak")
    assert run.remaining() >= runner.SECTION_FLOOR_S["peak"] - 1
    run = runner.Runner(runner.Settings.make(False), "unused.jsonl", budget_s=30.0)  # but never beyond the budget
    run.start_section(list(runner.SECTIONS), "peak")
    assert run.remaining() <= 30.0


def test_interleaved_timing_alternates_the_steps():
    calls = []
    timings = common.time_interleaved([lambda: calls.append("task") or 1.0, lambda: calls.append("bare") or 2.0],
                                      steps=3)
    assert calls == ["task", "bare"] * 3
    assert [t["results"] for t in timings] == [[1.0] * 3, [2.0] * 3]
    assert all(len(t["times_s"]) == 3 and t["median_s"] is not None for t in timings)
    single = common.time_calls(lambda: 5.0, steps=2, warmup=1)
    assert single["results"] == [5.0, 5.0, 5.0] and len(single["warmup_s"]) == 1 and len(single["times_s"]) == 2


def _step(section, task, **kw):
    return {"section": section, "config": f"{task} cfg", "kind": "train_step", "status": "ok", "task": task,
            "batch": 1, **kw}


def test_report_verdicts_and_rendering(tmp_path):
    records = [
        {"section": "peak", "config": "p", "kind": "peak", "library": "numpy", "n": 64, "best_gflops": 100.0,
         "median_gflops": 90.0, "status": "ok"},
        _step("tasks64", "jigsaw", step_s=1.0, gflops=70.0, ratio_to_bare=1.05, bare={"step_s": 0.95, "gflops": 74}),
        _step("tasks64", "rpl", step_s=1.0, gflops=30.0, ratio_to_bare=1.5, bare={"step_s": 0.6, "gflops": 50},
              flops_by_type={"Conv3D": 1.0, "Dense": 0.1}),
        # train_step.py prints the task, then its bare reference, then the memory check: merged per config
        _step("tasks128", "rotation", step_s=5.0, gflops=65.0),
        {"section": "tasks128", "config": "rotation cfg", "kind": "bare", "status": "ok", "step_s": 5.0,
         "ratio_to_bare": 1.0},
        {"section": "tasks128", "config": "rotation cfg", "kind": "rss_check", "status": "ok", "peak_rss_mb": 9000.0},
        _step("tasks128", "jigsaw", step_s=4.0, gflops=70.0),
        {"section": "tasks128", "config": "jigsaw cfg", "kind": "error", "status": "error",
         "error": "killed by SIGKILL (out of memory?)"},
        {"section": "tasks128", "config": "exemplar cfg", "kind": "timeout", "status": "timeout", "timeout_s": 600},
        _step("tasks128", "cpc", step_s=4.0, gflops=70.0, peak_rss_mb=9500.0),
        {"section": "tasks128", "config": "cpc cfg", "kind": "rss_check", "status": "exceeded",
         "lower_bound_mb": 9500.0, "peak_rss_mb": None},
        {"section": "transforms", "config": "t", "kind": "pipeline", "task": "rotation", "workers": 2,
         "volumes_per_s": 0.5, "status": "ok"},
        {"section": "permutations", "config": "p", "kind": "permutations", "count": 1000, "n": 27, "seed": 0,
         "build_s": 2.0, "min_hamming": 23, "mean_hamming": 26.0, "unique": True, "random": {}, "status": "ok"},
    ]
    memory = tmp_path / "memory128.jsonl"  # memory128.py's records: the best remedy per task
    memory.write_text("\n".join(json.dumps({"kind": "memory128", "task": "rotation", "remedy": r, "size": 128,
                                            "batch": 2, "status": "ok", "peak_rss_gb": gb})
                                for r, gb in (("remat", 7.6), ("micro2", 5.4), ("none", 8.6))))
    target_rows = runner.targets(records, runner.machine_peak(records), memory_records=memory)
    rows = {row[0]: row[3] for row in target_rows}
    measured = {row[0]: row[1] for row in target_rows}
    notes = {row[0]: row[4] for row in target_rows}
    assert notes["rotation 128^3 batch 2: pretraining peak RSS, best remedy (GB)"].startswith("`micro2`")
    assert rows["rotation 128^3 batch 2: pretraining peak RSS, best remedy (GB)"] == "PASS"
    assert "jigsaw 128^3 batch 2: pretraining peak RSS, best remedy (GB)" not in rows  # none measured
    assert rows["jigsaw 64^3 b2: step / bare encoder on the same voxels"] == "PASS"
    assert rows["jigsaw 64^3 b2: % of fp32 matmul peak (TF CPU fp32)"] == "PASS"
    assert rows["rpl 64^3 b2: step / bare encoder on the same voxels"] == "MISS"
    assert rows["rpl 64^3 b2: % of fp32 matmul peak (TF CPU fp32)"] == "MISS"
    assert rows["rotation 128^3 batch 2: pretraining peak RSS, no remedy (GB)"] == "MISS"   # 9000 MiB = 9.4 GB
    # the model consumes 1 / 5.0 s = 0.2 volumes/s; the pipeline needs >= 0.6
    assert rows["rotation: pipeline (2 workers) / model volumes/s at 128^3"] == "MISS"
    assert rows["rotation 128^3 b1: step / bare encoder on the same voxels"] == "PASS"
    assert rows["jigsaw 128^3 b1: step / bare encoder on the same voxels"] == "n/a"   # the bare run died
    assert rows["jigsaw 128^3 batch 2: pretraining peak RSS, no remedy (GB)"] == "n/a"
    assert rows["exemplar 128^3 b1: step / bare encoder on the same voxels"] == "n/a"
    # batch 1 already above the limit: batch 2 is not run, and the check is a miss with a lower bound
    assert rows["cpc 128^3 batch 2: pretraining peak RSS, no remedy (GB)"] == "MISS"
    assert measured["cpc 128^3 batch 2: pretraining peak RSS, no remedy (GB)"].startswith("> 9.96")
    assert rows["jigsaw: min Hamming distance, 1000 x 27"] == "PASS"
    text = runner.render(records, runner.Settings.make(False), "now", 60.0, "python benchmarks/run.py")
    assert "timeout (> 600 s)" in text and "out of memory?" in text
    assert "## Why targets are missed" in text and "**rpl 64^3 b2" in text
    assert "**rotation pipeline**" in text
    # sections kept from an earlier run are credited to it in the header
    earlier = {"section": "runs", "kind": "run", "command": "python benchmarks/run.py --budget-min 60",
               "started": "then", "sections": ["peak", "tasks128"], "wall_s": 3000.0}
    text2 = runner.render(records + [earlier], runner.Settings.make(False), "now", 60.0,
                          "python benchmarks/run.py --only tasks64")
    assert "Sections kept from earlier runs: `python benchmarks/run.py --budget-min 60` on then (50 min)" in text2
    path = tmp_path / "BENCHMARKS.md"
    common.write_text_atomic(path, text)
    assert path.read_text() == text and not list(tmp_path.glob(".*tmp"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_memory128_remedies_and_memory_sampling():
    memory = _load("ssl3d_bench_memory128", "memory128.py")
    assert memory.parse_remedy("none") == (False, "float32", 1)
    assert memory.parse_remedy("remat") == (True, "float32", 1)
    assert memory.parse_remedy("remat+mixed_bfloat16") == (True, "mixed_bfloat16", 1)
    assert memory.parse_remedy("micro4+remat") == (True, "float32", 4)
    for bad in ("remat+fp8", "micro0", "micro2+micro4"):
        with pytest.raises(SystemExit):
            memory.parse_remedy(bad)
    status = memory.read_status("self")  # this process: VmHWM >= VmRSS >= RssAnon > 0
    assert status["VmHWM"] >= status["VmRSS"] >= status["RssAnon"] > 0
    assert memory.read_status(2**22 + 12345) is None  # no such process


def test_gpu_script_smoke_mode_prints_one_record_per_config(capsys):
    gpu = _load("ssl3d_bench_gpu", "gpu.py")
    gpu.main(["--smoke", "--tasks", "rotation,exemplar", "--backend", keras.backend.backend()])
    records = common.parse_json_lines(capsys.readouterr().out)
    assert [(r["task"], r["precision"], r["size"], r["status"]) for r in records] == [
        ("rotation", "float32", 16, "ok"), ("exemplar", "float32", 16, "ok")]
    for r in records:
        assert r["batch"] == 2 and r["step_s"] > 0 and r["volumes_per_s"] == pytest.approx(2 / r["step_s"])
        assert r["peak_device_gb"] > 0 and r["estimate_gb"] > 0 and isinstance(r["input_bound"], bool)
    assert records[1]["augment_on"] == "host"  # no accelerator here: numpy on the host
