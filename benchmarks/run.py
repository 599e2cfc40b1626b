"""Run every benchmark and write ``BENCHMARKS.md``.

    python benchmarks/run.py                    # everything that fits a 29-min budget
    python benchmarks/run.py --budget-min 60    # everything on a slow machine (52 min on the 2-core AVX2 EPYC)
    python benchmarks/run.py --only peak,tasks64
    python benchmarks/run.py --quick            # smoke run: tiny sizes, output in a temp folder
    python benchmarks/run.py --render           # re-write BENCHMARKS.md from results.jsonl

Each configuration runs in its own subprocess (``common.run_json_subprocess``) with a timeout,
so its peak RSS is its own and a hung backend cannot stall the run; a timeout or crash is
recorded as such and reported. Every JSON line a script prints becomes one record in
``benchmarks/results.jsonl`` (tagged with its section and configuration); ``BENCHMARKS.md`` is
rendered from those records (rewritten atomically after each section, so an interrupted run
still leaves a consistent report). ``--only`` re-runs some sections and keeps the others'
records. A global budget (``--budget-min``, 29 by default) shortens or skips the last
configurations rather than overrunning; skipped ones are listed as such.

Sections (in run order): machine, peak, permutations, transforms, tasks64, tasks128, tasks2d,
precision, profile (per-convolution times of the encoder), backends (last: JAX and
torch.compile are slow to compile on CPU, so a short budget cuts them first).
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (HERE, ROOT, cpu_flags, machine_info, parse_json_lines,  # noqa: E402
                    run_json_subprocess, write_text_atomic)

SECTIONS = ("machine", "peak", "permutations", "transforms", "tasks64", "tasks128", "tasks2d", "precision",
            "profile", "backends", "streaming")
TASKS_3D = ("cpc", "rpl", "jigsaw", "rotation", "exemplar")
TASKS_2D = ("cpc", "rpl", "jigsaw", "rotation", "exemplar")
# The task of the backend and precision comparisons: its step is the plain encoder on whole
# volumes (what facts.md measured), the heaviest use of the encoder per sample.
DEFAULT_TASK = "rotation"
ENCODER_LEVELS = 5  # Encoder3D default (32..512): patches must be >= 2**(levels-1) voxels per axis

# Share of the run budget each section may use (unused time carries over to the next sections),
# so that on a slow machine every section still measures its first configurations. In proportion
# to each section's seconds in the complete run on the 2-core AVX2 EPYC of BENCHMARKS.md (52 min:
# tasks128 1130 s, backends 700 s, tasks2d 530 s, tasks64 355 s, ...). A section always gets at
# least its floor (the peak is needed by every % of peak, and takes half a minute).
SECTION_SHARE = {"machine": 0.0, "peak": 0.01, "permutations": 0.005, "transforms": 0.02, "tasks64": 0.12,
                 "tasks128": 0.37, "tasks2d": 0.17, "precision": 0.02, "profile": 0.04, "backends": 0.23,
                 "streaming": 0.15}
SECTION_FLOOR_S = {"peak": 60, "permutations": 40, "transforms": 90, "precision": 90, "streaming": 300}
# TensorFlow enables its oneDNN kernels by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2-only CPUs its default (Eigen) Conv3D was 2.4x slower on the development machine. The run
# turns oneDNN on (a no-op where it is on already) and the backends section shows it off.
TF_ENV = {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")}

TARGETS = {
    "ratio_to_bare": 1.15,      # task step <= 1.15x bare encoder on the same voxels
    "pct_peak": 60.0,           # >= 60 % of the measured fp32 matmul peak (TF CPU fp32)
    "pipeline_over_model": 3.0,  # input pipeline >= 3x the model's volumes/s (2 workers)
    "rss_gb": 8.0,              # 128^3 batch-2 pretraining peak RSS <= 8 GB (10^9 bytes)
    "perm_min_hamming": 22,     # 1000 x 27 permutations: min Hamming >= 22 ...
    "perm_seconds": 10.0,       # ... built in <= 10 s
    "streaming_growth_pct": 10.0,  # peak RssAnon of an epoch grows < 10 % from 100 to 1000 subjects
}
OOM_KILL = "killed by SIGKILL (out of memory?)"
RSS_LIMIT_MB = round(TARGETS["rss_gb"] * 1e9 / 2**20)  # the batch-2 memory check is skipped above this at batch 1


@dataclass
class Settings:
    quick: bool
    size64: int = 64
    size128: int = 128
    size2d: int = 224
    batch2d: int = 4
    steps: int = 5
    warmup: int = 1
    filters: str = ""          # "" = the default 32..512
    encoder2d: str = "densenet121"
    precision_size: int = 32   # bfloat16 is emulated on CPUs without AMX/AVX512_BF16: keep its run short
    peak_n: int = 4096
    peak_repeats: int = 5
    transform_size: int = 128
    subjects: int = 8
    epochs: int = 2
    volumes_per_epoch: int = 16
    timeout_scale: float = 1.0
    levels: int = ENCODER_LEVELS

    @classmethod
    def make(cls, quick):
        if not quick:
            return cls(quick=False)
        return cls(quick=True, size64=32, size128=32, size2d=64, batch2d=2, steps=2, warmup=1, filters="4,8,16",
                   precision_size=16, encoder2d="tiny", peak_n=512, peak_repeats=3, transform_size=32, subjects=4, epochs=1,
                   volumes_per_epoch=8, timeout_scale=3.0, levels=3)  # quick runs are for development, on a busy machine


@dataclass
class Config:
    section: str
    name: str
    cmd: list
    timeout_s: float
    env: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- configurations

def python_cmd(script, *args):
    return [sys.executable, str(HERE / script), *[str(a) for a in args]]


def cpc_task_args(size, levels):
    """CPC's default 4x4x4 grid cuts 64^3 into 13^3 patches, too small for the encoder's 4
    poolings; use the largest grid <= 4 whose patches survive them (recorded in the label)."""
    for grid in (4, 3, 2):
        if size // grid - 3 >= 2 ** (levels - 1):
            return "" if grid == 4 else f"grid={grid}"
    return ""


def train_cmd(s, task, size, batch, *extra, dims=3, task_args=""):
    args = ["--task", task, "--dims", dims, "--size", size, "--batch", batch, "--steps", s.steps,
            "--warmup", s.warmup, *extra]
    if dims == 3 and s.filters:
        args += ["--filters", s.filters]
    if dims == 2:
        args += ["--encoder2d", s.encoder2d]
    if task_args:
        args += ["--task-args", task_args]
    return python_cmd("train_step.py", *args)


def section_configs(section, s):
    t = s.timeout_scale
    if section == "peak":
        configs = [Config("peak", "numpy+tensorflow", python_cmd("peak.py", "--n", s.peak_n, "--repeats",
                                                                 s.peak_repeats, "--tensorflow"), 180 * t)]
        flags = cpu_flags()
        if "avx512f" in flags:  # OpenBLAS may not pick its AVX-512 kernels on a virtual CPU: try them
            core = "SapphireRapids" if "avx512_bf16" in flags else "SkylakeX"
            configs.append(Config("peak", f"numpy OPENBLAS_CORETYPE={core}",
                                  python_cmd("peak.py", "--n", s.peak_n, "--repeats", s.peak_repeats), 120 * t,
                                  env={"OPENBLAS_CORETYPE": core}))
        return configs
    if section == "permutations":
        return [Config("permutations", "1000x27", python_cmd("permutations.py", "--count", 1000, "--n", 27),
                       120 * t)]
    if section == "transforms":
        configs = [Config("transforms", f"transforms+pipeline {s.transform_size}^3",
                          python_cmd("transforms.py", "--size", s.transform_size, "--batch", 2, "--subjects",
                                     s.subjects, "--epochs", s.epochs, "--volumes-per-epoch", s.volumes_per_epoch,
                                     "--workers", "1,2"), 360 * t)]
        if (HERE / "pipeline.py").is_file():  # the data engineer's pipeline-alone benchmark
            extra = ["--subjects", 2, "--repeats", 1, "--size", 32] if s.quick else []
            configs.append(Config("transforms", "pipeline.py", python_cmd("pipeline.py", *extra), 240 * t))
        return configs
    if section == "streaming":
        extra = ["--subjects", "4,8", "--size", 16] if s.quick else []
        return [Config("streaming", "pretrain+finetune, 100 vs 1000 subjects", python_cmd("streaming.py", *extra),
                       3600 * t)]
    if section == "tasks64":
        timeouts = {"cpc": 200, "rpl": 100, "jigsaw": 200, "rotation": 200, "exemplar": 300}
        return [Config("tasks64", f"{task} {s.size64}^3 b2",
                       train_cmd(s, task, s.size64, 2, "--with-bare",
                                 task_args=cpc_task_args(s.size64, s.levels) if task == "cpc" else ""),
                       timeouts[task] * t) for task in TASKS_3D]
    if section == "tasks128":
        # batch 1 (exemplar: one triplet = 3 volumes), the bare reference, then one batch-2 step
        # for the pretraining memory check.
        timeouts = {"cpc": 300, "rpl": 120, "jigsaw": 300, "rotation": 360, "exemplar": 600}
        return [Config("tasks128", f"{task} {s.size128}^3 b1", train_cmd(
            s, task, s.size128, 1, "--with-bare", "--rss-batch", 2, "--rss-limit-mb", RSS_LIMIT_MB,
            task_args=cpc_task_args(s.size128, s.levels) if task == "cpc" else ""), timeouts[task] * t)
            for task in TASKS_3D]
    if section == "tasks2d":
        return [Config("tasks2d", f"{task} {s.size2d}^2 b{s.batch2d}",
                       train_cmd(s, task, s.size2d, s.batch2d, dims=2), 240 * t) for task in TASKS_2D]
    if section == "precision":
        return [Config("precision", f"{DEFAULT_TASK} {policy}",
                       train_cmd(s, DEFAULT_TASK, s.precision_size, 2, "--dtype-policy", policy), 200 * t)
                for policy in ("float32", "mixed_bfloat16")]
    if section == "backends":
        # JAX compiles one small XLA program per variable initializer while the model is built (tens
        # of seconds for the default encoder), then the train step; the slow ones get capped timeouts.
        # TensorFlow without jit_compile is the tasks64 section's rotation run (not repeated here).
        runs = [("torch", False, 150), ("jax", True, 240), ("tensorflow", True, 240),
                ("jax", False, 180), ("torch", True, 240)]
        configs = [Config("backends", f"{DEFAULT_TASK} {backend}{' jit' if jit else ''}",
                          train_cmd(s, DEFAULT_TASK, s.size64, 2, "--backend", backend,
                                    *(["--jit-compile"] if jit else [])), timeout * t)
                   for backend, jit, timeout in runs]
        if TF_ENV["TF_ENABLE_ONEDNN_OPTS"] != "0":
            configs.insert(0, Config("backends", f"{DEFAULT_TASK} tensorflow onednn-off",
                                     train_cmd(s, DEFAULT_TASK, s.size64, 2), 200 * t,
                                     env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
        return configs
    if section == "profile":
        filters = ["--filters", s.filters] if s.filters else []
        patch = s.size64 // 3 - 3  # the 3x3x3 grid's patches (jigsaw, RPL) at size64
        shapes = [f"2,{s.size64},{s.size64},{s.size64},1", f"54,{patch},{patch},{patch},1"]
        return [Config("profile", f"encoder {shape}", python_cmd("profile_layers.py", "--shape", shape, "--steps",
                                                                 s.steps, "--warmup", s.warmup, *filters), 180 * t)
                for shape in shapes]
    raise ValueError(section)


# --------------------------------------------------------------------------- running

class Runner:
    def __init__(self, settings, results_path, budget_s, log=print):
        self.s = settings
        self.results_path = Path(results_path)
        self.budget_s = budget_s
        self.t0 = time.perf_counter()
        self.log = log

        self.section_deadline = None

    def remaining(self):
        left = self.budget_s - (time.perf_counter() - self.t0)
        if self.section_deadline is not None:
            left = min(left, self.section_deadline - time.perf_counter())
        return left

    def start_section(self, sections, section):
        """This section may run until its share of what is left for it and the sections after it."""
        now = time.perf_counter()
        left = self.budget_s - (now - self.t0)
        shares = [SECTION_SHARE[s] for s in sections[sections.index(section):]]
        share = SECTION_SHARE[section] / sum(shares) if sum(shares) else 1.0
        allowed = max(max(0.0, left) * share, min(max(0.0, left), SECTION_FLOOR_S.get(section, 0)))
        self.section_deadline = now + allowed

    def run_config(self, cfg, peak):
        cmd = list(cfg.cmd)
        if peak and Path(cmd[1]).name in ("train_step.py", "profile_layers.py"):
            cmd += ["--peak", f"{peak:.3f}"]
        timeout = min(cfg.timeout_s, self.remaining() - 5)
        base = {"section": cfg.section, "config": cfg.name, "command": shlex.join(cmd[1:])}
        if timeout < 20:
            self.log(f"  {cfg.name}: skipped (the section's time budget is spent)")
            return [{**base, "status": "skipped", "reason": "the section's time budget is spent"}]
        self.log(f"  {cfg.name} (timeout {timeout:.0f} s) ...", end="", flush=True)
        records, status, info = run_json_subprocess(cmd, timeout, env={**TF_ENV, **cfg.env})
        self.log(f" {status} in {info['wall_s']:.0f} s")
        out = []
        for r in records:
            rec = {**base, **r, "wall_s": info["wall_s"], "env": cfg.env or None}
            rec.setdefault("status", status)
            if status != "ok" and rec["status"] == "ok":
                rec["process_status"] = status
            out.append(rec)
        if status == "timeout":
            out.append({**base, "kind": "timeout", "status": "timeout", "timeout_s": round(timeout),
                        "wall_s": info["wall_s"]})
        elif status == "error" and not any(r.get("status") == "error" for r in out):
            error = info["stderr_tail"][-500:]
            if info["returncode"] == -9:
                error = OOM_KILL + " " + error
            out.append({**base, "kind": "error", "status": "error", "error": error, "wall_s": info["wall_s"]})
        return out


def load_records(path):
    path = Path(path)
    if not path.is_file():
        return []
    return parse_json_lines(path.read_text(encoding="utf-8"))


def save_records(path, records):
    write_text_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def machine_peak(records):
    values = [r["best_gflops"] for r in records if r.get("kind") == "peak" and r.get("library") == "numpy"
              and r.get("best_gflops")]
    return max(values) if values else None


# --------------------------------------------------------------------------- rendering

def fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def gb(mb):
    return None if mb is None else mb * 2**20 / 1e9


def shape_text(shape):
    if not shape:
        return "—"
    n, *spatial, c = shape
    sides = set(spatial)
    space = f"{spatial[0]}^{len(spatial)}" if len(sides) == 1 else "x".join(map(str, spatial))
    return f"{n} x {space}" + (f" x {c}" if c != 1 else "")


def table(header, rows):
    if not rows:
        return "_Not measured (section not run; `--only SECTION` runs it)._"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def by_section(records, section, kind=None):
    return [r for r in records if r.get("section") == section and (kind is None or r.get("kind") == kind)]


def failed_text(r):
    if r.get("status") == "timeout":
        return f"timeout (> {r.get('timeout_s')} s)"
    if r.get("status") == "skipped":
        return "skipped: " + r.get("reason", "")
    error = str(r.get("error", ""))
    if error.startswith(OOM_KILL):
        return "error: " + OOM_KILL  # the stderr tail after it is library start-up noise
    return "error: " + error.replace("|", "/").replace("\n", " ")[:160]


def step_records(records, section):
    """One record per configuration: the train_step measurement with its ``bare`` reference
    (``ratio_to_bare``) and ``rss_check`` merged in, or the configuration's failure record."""
    out = {}
    for r in records:
        if r.get("section") != section:
            continue
        cfg = r.get("config")
        kind = r.get("kind")
        main = out.get(cfg)
        has_main = main is not None and main.get("kind") == "train_step"
        if kind == "train_step":
            out[cfg] = dict(r)
        elif kind == "bare" and has_main:
            main["bare"] = r
            if r.get("ratio_to_bare") is not None:
                main["ratio_to_bare"] = r["ratio_to_bare"]
        elif kind == "rss_check" and has_main:
            main["rss_check"] = r
        elif has_main:  # a failure after the main measurement (bare or memory check)
            main.setdefault("later_failures", []).append(r)
            if "bare" in main and str(r.get("error", "")).startswith(OOM_KILL):
                # killed during the batch-2 memory check: it needed more than the machine has
                seen = [x.get("peak_rss_mb") or 0 for x in (main, main["bare"])]
                main["rss_check"] = {"status": "killed", "lower_bound_mb": max(seen)}
        elif main is None:
            out[cfg] = r
    return out


def rss_text(check):
    """The batch-2 memory check's figure: GB, or a lower bound when batch 1 already exceeded the limit."""
    if check.get("status") == "exceeded":
        return f"> {fmt(gb(check.get('lower_bound_mb')))} (batch 1 already; not run)"
    if check.get("status") == "killed":
        return f"> {fmt(gb(check.get('lower_bound_mb')))} (killed by the out-of-memory killer)"
    return fmt(gb(check.get("peak_rss_mb")))


def task_of(r):
    return r.get("task") or r.get("config", "").split()[0]


def render_task_table(records, section, peak, with_bare=True, rss_check=False):
    rows = []
    for cfg, r in step_records(records, section).items():
        if r.get("kind") != "train_step" or r.get("status") != "ok":
            blanks = (7 if with_bare else 4) + (1 if rss_check else 0)
            rows.append([cfg, "—", failed_text(r)] + ["—"] * blanks)
            continue
        gflops = r.get("gflops")
        pct = 100 * gflops / peak if (gflops and peak) else None
        name = task_of(r) + (f" ({r['task_args']})" if r.get("task_args") else "")
        row = [name, shape_text(r.get("encoder_input_shape")), fmt(r.get("step_s")), fmt(r.get("gflop_step"), 4),
               fmt(gflops), fmt(pct)]
        if with_bare:
            bare = r.get("bare") or {}
            sequential = bare and "timing" not in bare  # measured before the steps were alternated
            row += [fmt(bare.get("step_s")), fmt(bare.get("gflops")),
                    fmt(r.get("ratio_to_bare")) + (" (seq.)" if sequential else "")]
        row.append(fmt(gb(r.get("peak_rss_mb"))))
        if rss_check:
            check = r.get("rss_check") or {}
            late = [failed_text(f) for f in r.get("later_failures", [])]
            row.append(rss_text(check) if check or not late else late[-1])
        elif r.get("later_failures"):
            row[-1] += " (" + failed_text(r["later_failures"][-1]) + ")"
        rows.append(row)
    header = ["task", "encoder input", "s/step", "GFLOP/step", "GFLOP/s", "% peak"]
    if with_bare:
        header += ["bare s/step", "bare GFLOP/s", "task/bare"]
    header.append("peak RSS GB")
    if rss_check:
        header.append("batch-2 peak RSS GB")
    return table(header, rows)


def size_labels(settings):
    settings = settings or Settings.make(False)
    return (("tasks64", f"{settings.size64}^3 b2"), ("tasks128", f"{settings.size128}^3 b1")), settings.size128


def targets(records, peak, settings=None, memory_records=HERE / "memory128.jsonl"):
    """``[(figure, value_text, target_text, verdict, note)]`` for the Targets table."""
    rows = []
    labels, big = size_labels(settings)
    for section, label in labels:
        for cfg, r in step_records(records, section).items():
            task = task_of(r)
            ok = r.get("kind") == "train_step" and r.get("status") == "ok"
            ratio = r.get("ratio_to_bare") if ok else None
            rows.append((f"{task} {label}: step / bare encoder on the same voxels", fmt(ratio),
                         f"<= {TARGETS['ratio_to_bare']}", verdict(ratio, TARGETS["ratio_to_bare"], "<="),
                         "" if ok else failed_text(r)))
            pct = 100 * r["gflops"] / peak if ok and r.get("gflops") and peak else None
            rows.append((f"{task} {label}: % of fp32 matmul peak (TF CPU fp32)", fmt(pct),
                         f">= {TARGETS['pct_peak']:.0f} %", verdict(pct, TARGETS["pct_peak"], ">="),
                         "" if ok else failed_text(r)))
    model_rate = model_rates(records)
    pipes = {r["task"]: r for r in by_section(records, "transforms", "pipeline") if r.get("workers") == 2}
    for task in TASKS_3D:
        pipe = pipes.get(task)
        rate = model_rate.get(task)
        ratio = pipe["volumes_per_s"] / rate if pipe and rate else None
        rows.append((f"{task}: pipeline (2 workers) / model volumes/s at {big}^3", fmt(ratio),
                     f">= {TARGETS['pipeline_over_model']:.0f}x", verdict(ratio, TARGETS["pipeline_over_model"], ">="),
                     "" if ratio else "not measured"))
    remedied = best_memory_remedies(memory_records)
    for cfg, r in step_records(records, "tasks128").items():
        check = r.get("rss_check") or {}
        value = gb(check.get("peak_rss_mb") or check.get("lower_bound_mb"))
        failure = (r.get("later_failures") or [r])[-1]
        rows.append((f"{task_of(r)} {big}^3 batch 2: pretraining peak RSS, no remedy (GB)", rss_text(check),
                     f"<= {TARGETS['rss_gb']:.0f} GB", verdict(value, TARGETS["rss_gb"], "<="),
                     "" if value else failed_text(failure)))
        best = remedied.get(task_of(r))
        if best:
            rows.append((f"{task_of(r)} {big}^3 batch 2: pretraining peak RSS, best remedy (GB)",
                         fmt(best["peak_rss_gb"]), f"<= {TARGETS['rss_gb']:.0f} GB",
                         verdict(best["peak_rss_gb"], TARGETS["rss_gb"], "<="),
                         f"`{best['remedy']}` (benchmarks/memory128.py)"))
    perm = next(iter(by_section(records, "permutations", "permutations")), None)
    rows.append(("jigsaw: min Hamming distance, 1000 x 27", fmt(perm and perm.get("min_hamming")),
                 f">= {TARGETS['perm_min_hamming']}", verdict(perm and perm.get("min_hamming"),
                                                              TARGETS["perm_min_hamming"], ">="), ""))
    rows.append(("jigsaw: seconds to build 1000 x 27 (uncached)", fmt(perm and perm.get("build_s")),
                 f"<= {TARGETS['perm_seconds']:.0f} s", verdict(perm and perm.get("build_s"),
                                                                TARGETS["perm_seconds"], "<="), ""))
    for r in by_section(records, "streaming", "streaming_summary"):
        lo, hi = r["subjects"]
        rows.append((f"{r['run']}: growth of peak RssAnon from {lo} to {hi} subjects (%)", fmt(r["growth_pct"]),
                     f"< {TARGETS['streaming_growth_pct']:.0f} %",
                     verdict(r["growth_pct"], TARGETS["streaming_growth_pct"], "<"),
                     f"{fmt(r['peak_rss_anon_mb'][0])} -> {fmt(r['peak_rss_anon_mb'][1])} MB"))
    return rows


def best_memory_remedies(path):
    """``{task: record}``: the lowest finished 128^3 batch-2 peak with a remedy in ``memory128.py``'s records."""
    records = parse_json_lines(Path(path).read_text()) if Path(path).is_file() else []
    best = {}
    for r in records:
        if (r.get("kind"), r.get("size"), r.get("batch"), r.get("status")) != ("memory128", 128, 2, "ok"):
            continue
        if r.get("remedy") != "none" and r["peak_rss_gb"] < best.get(r["task"], {}).get("peak_rss_gb", math.inf):
            best[r["task"]] = r
    return best


def verdict(value, target, op):
    if value is None:
        return "n/a"
    good = {"<=": value <= target, ">=": value >= target, "<": value < target}[op]
    return "PASS" if good else "MISS"


def model_rates(records):
    """Volumes/s the model consumes at 128^3 (batch / s per step), per task."""
    rates = {}
    for r in step_records(records, "tasks128").values():
        if r.get("kind") == "train_step" and r.get("status") == "ok" and r.get("step_s"):
            rates[task_of(r)] = r["batch"] / r["step_s"]
    return rates


def explain_misses(records, peak, settings=None):
    lines = []
    labels, big = size_labels(settings)
    for section, label in labels:
        for r in step_records(records, section).values():
            if r.get("kind") != "train_step" or r.get("status") != "ok":
                continue
            task, bare = task_of(r), r.get("bare") or {}
            ratio, gflops = r.get("ratio_to_bare"), r.get("gflops")
            bare_pct = 100 * bare["gflops"] / peak if bare.get("gflops") and peak else None
            pct = 100 * gflops / peak if gflops and peak else None
            if ratio is not None and ratio > TARGETS["ratio_to_bare"]:
                extra = {k: v for k, v in (r.get("flops_by_type") or {}).items() if not k.startswith("Conv")}
                lines.append(
                    f"- **{task} {label}, task/bare = {fmt(ratio)}**: the task's step does "
                    f"{fmt(r.get('gflop_step'), 4)} GFLOP against the bare encoder's {fmt(bare.get('gflop_step'), 4)}; "
                    f"non-convolution forward GFLOP: {', '.join(f'{k} {fmt(v)}' for k, v in extra.items()) or 'none'}. "
                    "What remains is ours: the head, the loss, the reshapes of the patch axis and the "
                    "metric (the profile section shows what the encoder alone costs).")
            if pct is not None and pct < TARGETS["pct_peak"]:
                cause = (f"the bare encoder on the same tensor reaches {fmt(bare_pct)} % of peak too, so the gap is "
                         "in the convolution kernels (TensorFlow's CPU Conv3D and its gradients at these shapes; "
                         "see the profile section), not in the task"
                         if bare_pct is not None and bare_pct < TARGETS["pct_peak"]
                         else "the bare encoder does better on the same tensor, so the task adds the overhead")
                lines.append(f"- **{task} {label}, {fmt(pct)} % of peak** ({fmt(gflops)} GFLOP/s): {cause}.")
    lines += profile_findings(records, peak)
    model_rate = model_rates(records)
    for r in by_section(records, "transforms", "pipeline"):
        rate = model_rate.get(r["task"])
        if r.get("workers") == 2 and rate and r["volumes_per_s"] < TARGETS["pipeline_over_model"] * rate:
            lines.append(f"- **{r['task']} pipeline**: {fmt(r['volumes_per_s'])} volumes/s with 2 workers against "
                         f"{fmt(rate)} consumed by the model: the transform is the bottleneck (ours).")
    for r in step_records(records, "tasks128").values():
        check = r.get("rss_check") or {}
        value = gb(check.get("peak_rss_mb") or check.get("lower_bound_mb"))
        if value and value > TARGETS["rss_gb"]:
            voxels = r.get("encoder_voxels")
            growth = ""
            if check.get("peak_rss_mb") and r.get("peak_rss_mb") and voxels:
                per_voxel = (check["peak_rss_mb"] - r["peak_rss_mb"]) * 2**20 / voxels
                growth = (f" Measured growth from batch 1 to 2: {fmt(per_voxel / 1024)} KiB per input voxel of "
                          f"the encoder, i.e. {fmt(per_voxel / 128)} copies of a level-1 feature map (32 channels "
                          "x 4 bytes).")
            lines.append(f"- **{task_of(r)} {big}^3 batch 2, {rss_text(check)} GB**: the encoder's "
                         f"activations for {shape_text(r.get('encoder_input_shape'))} per sample are kept for the "
                         "backward pass (each residual block's convolution inputs, normalisation inputs and ReLU "
                         f"outputs at full resolution, then the gradients of the same size).{growth} The tensor "
                         "per step is the task's design (exemplar: three whole volumes per sample).")
    return lines


def profile_findings(records, peak):
    """What the per-convolution profile says about the % of peak: the share of the step spent
    outside the convolutions, and the convolutions that run far below the rest."""
    lines = []
    for summary in by_section(records, "profile", "layer_profile_summary"):
        layers = [r for r in by_section(records, "profile", "layer_profile") if r["input"] == summary["input"]]
        if not layers or not peak:
            continue
        total = sum(r["step_s"] for r in layers)
        slow = sorted(layers, key=lambda r: -r["step_s"])[:2]
        weak = [r for r in layers if r["gflops"] < 0.4 * peak and r["step_s"] > 0.05 * total]
        text = (f"- **Profile, encoder input {shape_text(summary['input'])}**: the convolutions trained one by one "
                f"add up to {fmt(summary['sum_of_conv_steps_s'])} s against {fmt(summary['encoder_step_s'])} s for "
                f"the whole encoder ({fmt(summary['conv_gflops'])} GFLOP/s = "
                f"{fmt(100 * summary['conv_gflops'] / peak)} % of peak), so the step is the convolutions' time. "
                "The largest: " + "; ".join(
                    f"{r['layer']} on {shape_text(r['layer_input'])} ({fmt(100 * r['step_s'] / total)} % of the "
                    f"time) at {fmt(100 * r['gflops'] / peak)} % of peak" for r in slow) + ".")
        if weak:
            text += (" Far below peak: " + "; ".join(
                f"{r['layer']} on {shape_text(r['layer_input'])} at {fmt(100 * r['gflops'] / peak)} %"
                for r in weak) + " (few input channels, or a 3x3x3 kernel on a 1-4 voxel grid that is mostly "
                                 "padding: the FLOPs counted are those of the layer as defined).")
        lines.append(text)
    return lines


def render_streaming(records):
    """The streaming section: peak anonymous memory of one epoch vs the number of subjects."""
    out = ["", "## Streaming: memory does not grow with the data set", "",
           "`benchmarks/streaming.py`: one epoch of `keras-ssl3d pretrain --task rotation` and of `keras-ssl3d "
           "finetune` (from scratch) on synthetic caches of 64³ x 4-channel subjects, 8-16 encoder, batch 2, "
           "each in a child process whose `RssAnon` (heap, tensors, batches; not the memory map's file pages) "
           "and `VmRSS` are sampled every 50 ms.", ""]
    rows = [[r["run"], r["subjects"], fmt(r.get("cache_gb")), fmt(r.get("run_wall_s")),
             fmt(r.get("peak_rss_anon_mb")), fmt(r.get("peak_rss_mb")), r.get("status")]
            for r in by_section(records, "streaming", "streaming_run")]
    out.append(table(["command", "subjects", "cache GB", "wall s", "peak RssAnon MB", "peak VmRSS MB", "status"],
                     rows))
    for r in by_section(records, "streaming", "streaming_summary")[:1]:
        load = ", ".join(fmt(x) for x in r.get("load_average") or [])
        out += ["", f"Measured on {r.get('cpu') or 'an unrecorded CPU'} (load average {load or '?'} at the end: "
                "the wall times include other jobs sharing the cores; the memory figures do not depend on them)."]
    for r in by_section(records, "streaming"):
        if r.get("kind") in ("error", "timeout"):
            out += ["", f"- {r.get('config')}: {failed_text(r)}"]
    return out


KEEP_MARKER = "<!-- Sections below are measured by hand and kept as they are by benchmarks/run.py. -->"


def keep_hand_sections(text, out_path):
    """``text`` plus whatever follows ``KEEP_MARKER`` in the current report (hand-measured sections)."""
    path = Path(out_path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if KEEP_MARKER not in old:
        return text
    return text.rstrip("\n") + "\n\n" + KEEP_MARKER + old.split(KEEP_MARKER, 1)[1]


def render(records, settings, started, wall_s, command):
    peak = machine_peak(records)
    machine = next(iter(by_section(records, "machine", "machine")), None)
    out = ["# Benchmarks", ""]
    rendering = "--render" in command.split()
    runs = [r for r in records if r.get("kind") == "run" and (rendering or r.get("command") != command)]
    listed = "; ".join(f"`{r['command']}` on {r['started']} ({fmt(r['wall_s'] / 60, 3)} min): "
                       f"{', '.join(r['sections'])}" for r in runs)
    if rendering:
        first = f"Rendered by `{command}` on {started} from the records of these runs: {listed}."
    else:
        first = (f"Generated by `{command}` on {started} ({fmt(wall_s / 60, 3)} min of a "
                 f"{'quick smoke' if settings.quick else 'partial' if '--only' in command.split() else 'full'} run)."
                 + (f" Sections kept from earlier runs: {listed}." if runs else ""))
    out.append(first + " Regenerate with `python benchmarks/run.py` "
               "(one section: `--only SECTION`; from the stored records: `--render`). Raw records: "
               "`benchmarks/results.jsonl`. Timing is median of "
               f"{settings.steps} steps after {settings.warmup} warm-up step(s) (the first step traces/compiles); "
               "each configuration runs in its own process. FLOPs are analytic (`benchmarks/common.py`): "
               "convolutions and dense layers, forward x3 for a training step.")
    if settings.quick:
        out += ["", "**Quick smoke run: tiny sizes and widths; the numbers mean nothing.**"]
    out += ["", "## Machine", ""]
    if machine:
        v = machine.get("versions", {})
        rows = [["CPU", f"{machine.get('cpu')} (family/model {machine.get('cpu_family_model')})"],
                ["cores", f"{machine.get('logical_cpus')} logical, {machine.get('usable_cpus')} usable"],
                ["memory", f"{machine.get('memory_gib')} GiB"],
                ["CPU features", ", ".join(machine.get("cpu_features") or []) or "—"],
                ["load average at start", ", ".join(fmt(x) for x in machine.get("load_average") or [])],
                ["TensorFlow runs", ", ".join(f"{k}={v}" for k, v in (machine.get("tf_env") or {}).items()) or "—"],
                ["versions", ", ".join(f"{k} {v[k]}" for k in v if v[k]) + f", Python {machine.get('python')}"]]
        out.append(table(["", ""], rows))
    out += ["", "## Peak: fp32 matmul", ""]
    rows = []
    for r in by_section(records, "peak"):
        if r.get("kind") == "peak":
            forced = r.get("openblas_coretype_env")
            lib = r["library"] + (f" (OpenBLAS {r.get('openblas_core')}"
                                  + (f", OPENBLAS_CORETYPE={forced}" if forced else "")
                                  + ")" if r["library"] == "numpy" else " (tf.linalg.matmul)")
            rows.append([lib, f"{r['n']}^2", fmt(r["best_gflops"]), fmt(r["median_gflops"])])
        elif r.get("status") != "ok":
            rows.append([r.get("config"), "—", failed_text(r), "—"])
    out.append(table(["library", "size", "best GFLOP/s", "median GFLOP/s"], rows))
    out += ["", f"The machine's peak used below (best numpy run): **{fmt(peak)} GFLOP/s**. TensorFlow's own "
            "matmul is listed for reference: TensorFlow's convolutions use its own kernels (oneDNN/Eigen), "
            "not OpenBLAS."]

    out += ["", f"## 3D pretext tasks, {settings.size64}^3 batch 2 (TensorFlow CPU, fp32)", "",
            "`encoder input` is the tensor the task's encoder sees per step (patch tasks fold their patches "
            "into the batch); `bare` is the encoder + global pooling + a Dense softmax trained on a tensor "
            "of exactly that shape (same process; its steps alternate with the task's, so both run under the same "
            "machine conditions); `(seq.)`: measured before that, the bare steps after all of the task's.", "",
            render_task_table(records, "tasks64", peak)]
    out += ["", f"## 3D pretext tasks, {settings.size128}^3 batch 1 (TensorFlow CPU, fp32)", "",
            "Exemplar's batch 1 is one triplet (3 volumes through the encoder). The last column is the "
            "process's peak RSS after one more step at batch 2: the pretraining memory check.", "",
            render_task_table(records, "tasks128", peak, rss_check=True)]
    encoder2d = "DenseNet-121" if settings.encoder2d == "densenet121" else "tiny DenseNet"
    out += ["", f"## 2D pretext tasks, {settings.size2d}^2 batch {settings.batch2d} "
            f"({encoder2d}, TensorFlow CPU, fp32)", "", render_task_table(records, "tasks2d", peak, with_bare=False)]

    out += ["", f"## Backends ({DEFAULT_TASK}, {settings.size64}^3 batch 2, fp32)", ""]
    rows = []
    backend_runs = dict(step_records(records, "backends"))
    tf_default = next((r for r in step_records(records, "tasks64").values() if task_of(r) == DEFAULT_TASK), None)
    tf_from_tasks = tf_default is not None and f"{DEFAULT_TASK} tensorflow" not in backend_runs
    if tf_from_tasks:  # TensorFlow without jit_compile: the tasks64 section's run
        backend_runs = {f"{DEFAULT_TASK} tensorflow": tf_default, **backend_runs}
    for cfg, r in backend_runs.items():
        if r.get("kind") == "train_step" and r.get("status") == "ok":
            pct = 100 * r["gflops"] / peak if peak and r.get("gflops") else None
            backend = r["backend"] + (" (oneDNN off)" if (r.get("env") or {}).get("TF_ENABLE_ONEDNN_OPTS") == "0"
                                      else "")
            rows.append([backend, "yes" if r.get("jit_compile") else "no", fmt(r.get("step_s")),
                         fmt(r.get("gflops")), fmt(pct), fmt((r.get("warmup_s") or [None])[0]), "ok"])
        else:
            jit = "yes" if cfg.endswith("jit") else "no"
            rows.append([cfg.split()[1], jit, "—", "—", "—", "—", failed_text(r)])
    out.append(table(["backend", "jit_compile", "s/step", "GFLOP/s", "% peak", "first step s (trace/compile)",
                      "status"], rows))
    out += ["", "TensorFlow without XLA is the default (`jit_compile` is left to Keras' \"auto\", which is off "
            "on CPU-only TensorFlow)" + ("; its row is the rotation run of the 3D tasks table" if tf_from_tasks else "")
            + ". JAX without `jit_compile` runs op by op. All TensorFlow runs use "
            f"`TF_ENABLE_ONEDNN_OPTS={TF_ENV['TF_ENABLE_ONEDNN_OPTS']}` except the `oneDNN off` row: TensorFlow "
            "turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX."]

    out += ["", f"## Precision ({DEFAULT_TASK}, {settings.precision_size}^3 batch 2, TensorFlow CPU)", ""]
    prec = {r.get("dtype_policy") or r["config"].split()[-1]: r for r in step_records(records, "precision").values()}
    fp32, bf16 = prec.get("float32"), prec.get("mixed_bfloat16")
    rows = []
    for policy, r in (("float32", fp32), ("mixed_bfloat16", bf16)):
        if r is None:
            continue
        if r.get("kind") == "train_step" and r.get("status") == "ok":
            speed = fp32["step_s"] / r["step_s"] if fp32 and fp32.get("step_s") and r.get("step_s") else None
            losses = r.get("losses") or [None]
            rows.append([policy, fmt(r.get("step_s")), fmt(speed), fmt(losses[0], 5), fmt(losses[-1], 5),
                         "yes" if r.get("loss_finite") else "NO"])
        else:
            rows.append([policy, failed_text(r), "—", "—", "—", "—"])
    out.append(table(["policy", "s/step", "speed-up vs fp32", "first-step loss", "last loss", "all finite"], rows))
    if fp32 and bf16 and fp32.get("losses") and bf16.get("losses"):
        a, b = fp32["losses"][0], bf16["losses"][0]
        close = abs(a - b) <= 0.05 * abs(a) + 0.01
        out += ["", f"Same seed, weights and batch: the first step's loss (before any update) differs by "
                f"{fmt(abs(a - b), 3)} ({'close' if close else 'NOT close'}: tolerance 5 % + 0.01)."]
    features = set((machine or {}).get("cpu_features") or [])
    out += ["", "bfloat16 hardware: " + (", ".join(sorted(features & {"amx_bf16", "amx_tile", "avx512_bf16"}))
                                        or "none on this CPU (no AMX, no AVX512_BF16): bfloat16 is emulated, "
                                           "so no speed-up is expected") + "."]

    out += ["", f"## Input pipeline ({settings.transform_size}^3, batch 2)", "",
            "`transform`: the task's numpy transform on an in-memory batch. `pipeline`: cache on disk "
            "(memory-mapped) -> `VolumeBatches` + the transform -> Keras' PyDataset adapter with 1 or 2 "
            "worker threads, as `fit` drives it (from an epoch's start to its last batch; Keras' fixed "
            "~0.1 s queue drain at each epoch end is left out). Measured alone: during training the "
            "workers share the cores with the model. `model`: volumes/s the training step consumes at "
            f"{settings.size128}^3 (batch / s per step, from the 128^3 table).", ""]
    transforms = {r["task"]: r for r in by_section(records, "transforms", "transform")}
    pipes = {(r["task"], r["workers"]): r for r in by_section(records, "transforms", "pipeline")}
    rates = model_rates(records)
    rows = []
    for task in TASKS_3D:
        if task not in transforms and not any(k[0] == task for k in pipes):
            continue
        p2 = pipes.get((task, 2))
        rate = rates.get(task)
        rows.append([task, fmt(transforms.get(task, {}).get("volumes_per_s")),
                     fmt(pipes.get((task, 1), {}).get("volumes_per_s")), fmt(p2 and p2["volumes_per_s"]),
                     fmt(rate), fmt(p2["volumes_per_s"] / rate if p2 and rate else None)])
    out.append(table(["task", "transform vol/s", "pipeline 1 worker vol/s", "pipeline 2 workers vol/s",
                      "model vol/s", "pipeline / model"], rows))
    failures = [r for r in by_section(records, "transforms") if r.get("status") not in (None, "ok")]
    for r in failures:
        out += ["", f"- {r.get('config')}: {failed_text(r)}"]
    extra = [r for r in by_section(records, "transforms") if r.get("config") == "pipeline.py" and r.get("benchmark")]
    if extra:
        out += ["", "From `benchmarks/pipeline.py` (the data pipeline's own benchmark: BraTS-sized 4-modality "
                "subjects, a plain rotation transform):", ""]
        rows = []
        for r in extra:
            if r["benchmark"] == "nifti_load":
                rows.append(["NIfTI load", f"{r.get('files')} files, {'x'.join(map(str, r.get('shape', [])))}",
                             "—", f"{fmt(r.get('median_s'))} s (median)"])
            elif r["benchmark"] == "preprocess":
                rows.append(["preprocess to cache", f"{r.get('subjects')} subjects -> {r.get('size')}^3",
                             r.get("workers"), f"{fmt(r.get('subjects_per_s'))} subjects/s"])
            elif r["benchmark"] == "pipeline":
                rows.append([f"VolumeBatches, transform {r.get('transform')}",
                             f"{r.get('size')}^3 x {r.get('channels')}, batch {r.get('batch_size')}",
                             r.get("workers"), f"{fmt(r.get('volumes_per_s'))} volumes/s"])
        out.append(table(["step", "data", "workers", "rate"], rows))

    out += ["", "## Jigsaw permutations", ""]
    perm = next(iter(by_section(records, "permutations", "permutations")), None)
    if perm:
        rnd = perm.get("random", {})
        rows = [[f"max-Hamming selection (seed {perm['seed']})", perm["count"], fmt(perm["build_s"]),
                 perm["min_hamming"], fmt(perm["mean_hamming"], 4), "yes" if perm.get("unique") else "NO"]]
        for count, st in sorted(rnd.items(), key=lambda kv: int(kv[0])):
            rows.append([f"uniformly random (for comparison)", count, "—", st["min"], fmt(st["mean"], 4), "—"])
        out.append(table(["set", "permutations of 27", "build s", "min Hamming", "mean Hamming", "all unique"], rows))
    else:
        for r in by_section(records, "permutations"):
            out.append(f"- {failed_text(r)}")

    out += ["", "## Profile: the encoder's convolutions one by one (TensorFlow CPU, fp32)", "",
            "Each convolution of the default encoder trained alone at its exact input shape "
            "(`BatchNormalization -> Conv3D`, so its input gradient is computed as in the network; "
            "3x forward FLOPs per step). The sum of these steps against the whole encoder's step shows "
            "how much time is outside the convolutions (normalisation, activations, pooling, Adam, "
            "framework overhead).", ""]
    summaries = by_section(records, "profile", "layer_profile_summary")
    for summary in summaries:
        layers = [r for r in by_section(records, "profile", "layer_profile") if r["input"] == summary["input"]]
        out += [f"Encoder input {shape_text(summary['input'])}:", ""]
        rows = [[r["layer"], shape_text(r["layer_input"]), f"{'x'.join(map(str, r['kernel']))} -> {r['filters']}",
                 fmt(r["gflop_step"]), fmt(r["step_s"]), fmt(r["gflops"]),
                 fmt(100 * r["gflops"] / peak if peak else None)] for r in layers]
        out.append(table(["convolution", "its input", "kernel -> filters", "GFLOP/step", "s/step", "GFLOP/s",
                          "% peak"], rows))
        out += ["", f"Sum of the convolutions' steps: {fmt(summary['sum_of_conv_steps_s'])} s "
                f"({fmt(summary['conv_gflops'])} GFLOP/s); the whole encoder's step: "
                f"{fmt(summary['encoder_step_s'])} s ({fmt(summary['encoder_gflops'])} GFLOP/s).", ""]
    if not summaries:
        out.append(table([], []))
    for r in by_section(records, "profile"):
        if r.get("status") not in (None, "ok"):
            out += ["", f"- {r.get('config')}: {failed_text(r)}"]

    out += render_streaming(records)
    memory = HERE / "memory128.md"  # written by memory128.py --render
    if memory.is_file():
        out += ["", memory.read_text(encoding="utf-8").rstrip()]

    out += ["", "## Targets", ""]
    target_rows = targets(records, peak, settings)
    out.append(table(["figure", "measured", "target", "verdict", "note"], [list(row) for row in target_rows]))
    misses = explain_misses(records, peak, settings)
    out += ["", "## Why targets are missed", ""]
    out += misses or ["No target is missed in this run."]
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run); writes to a temp folder")
    p.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--out", default=None, help="report path (default: BENCHMARKS.md; --quick: a temp folder)")
    p.add_argument("--results", default=None, help="records path (default: benchmarks/results.jsonl)")
    p.add_argument("--budget-min", type=float, default=29.0, help="stop starting configurations after this")
    p.add_argument("--render", action="store_true", help="only re-write the report from the records")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    args = p.parse_args(argv)

    settings = Settings.make(args.quick)
    if args.quick and (args.out is None or args.results is None):
        tmp = Path(tempfile.mkdtemp(prefix="ssl3d-bench-quick-"))
        args.out = args.out or str(tmp / "BENCHMARKS.md")
        args.results = args.results or str(tmp / "results.jsonl")
    out_path = Path(args.out or ROOT / "BENCHMARKS.md")
    results_path = Path(args.results or HERE / "results.jsonl")
    sections = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    command = "python benchmarks/run.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    if args.list:
        for section in sections:
            for cfg in ([] if section == "machine" else section_configs(section, settings)):
                print(f"{section:13s} {cfg.name:32s} timeout {cfg.timeout_s:5.0f} s  {shlex.join(cfg.cmd[1:])}")
        return 0

    records = load_records(results_path)
    if args.render:
        stored = next((r for r in records if r.get("kind") == "settings"), None)
        if stored:
            settings = Settings(**{k: v for k, v in stored.items() if k in Settings.__dataclass_fields__})
        write_text_atomic(out_path, keep_hand_sections(render(records, settings, started, 0.0, command), out_path))
        print(f"wrote {out_path}")
        return 0

    records = [r for r in records if r.get("section") not in sections and r.get("kind") != "settings"]
    for r in records:  # earlier runs keep only the sections this run does not redo
        if r.get("kind") == "run":
            r["sections"] = [x for x in r["sections"] if x not in sections]
    records = [r for r in records if r.get("kind") != "run" or r["sections"]]
    records.insert(0, {"section": "settings", "kind": "settings", "started": started, **dataclasses.asdict(settings)})
    runner = Runner(settings, results_path, args.budget_min * 60)
    print(f"benchmarks -> {results_path}, {out_path}; sections: {', '.join(sections)}", flush=True)
    for section in sections:
        runner.start_section(sections, section)
        print(f"[{section}] {runner.remaining() / 60:.1f} min for this section", flush=True)
        if section == "machine":
            records.append({"section": "machine", "config": "machine", "kind": "machine", "status": "ok",
                            "tf_env": TF_ENV, **machine_info()})
        else:
            for cfg in section_configs(section, settings):
                records.extend(runner.run_config(cfg, machine_peak(records)))
                save_records(results_path, records)
        save_records(results_path, records)
        write_text_atomic(out_path, keep_hand_sections(
            render(records, settings, started, time.perf_counter() - runner.t0, command), out_path))
    wall = time.perf_counter() - runner.t0
    records.append({"section": "runs", "kind": "run", "command": command, "started": started,
                    "sections": sections, "wall_s": round(wall, 1)})
    save_records(results_path, records)
    write_text_atomic(out_path, keep_hand_sections(render(records, settings, started, wall, command), out_path))
    print(f"done in {wall / 60:.1f} min: {out_path}, {results_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
