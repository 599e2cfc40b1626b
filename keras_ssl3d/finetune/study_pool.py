"""A study's runs trained N at a time in separate processes (``study --parallel-runs N``).

A study's runs are independent of each other (a run is fixed by its encoder, label subset and the study's
split), so several processes can train them at once; the study still reads every result in its own order.
Each run writes only its own folder (``result.json`` last, atomically), so an interrupted parallel study
resumes like a sequential one. The processes share the machine's cores (`thread_limits`); a run's numbers
depend on its thread count (the order of floating-point sums), so they match a one-at-a-time study's only up
to that rounding, which early stopping can amplify.

Why: a small run (the demo's 24^3 U-Net) keeps ~1.3 of 2 CPU cores busy (per-step overhead, small
convolutions); with more cores than one run uses, N at once finish a study sooner (on 2 cores it was not
reliably faster, so the demo trains one at a time). On one accelerator the processes would share its memory
(TensorFlow claims all of it per process): this is for CPU machines.

Each run is a fresh ``python -m keras_ssl3d.finetune.study_pool JOB.json``: a job is plain JSON (the data's
cache, the run's settings and folder), nothing is pickled, and unlike ``multiprocessing``'s spawn the
child never re-imports the user's main script (a script without an ``if __name__ == "__main__"`` guard
would run again in every process).
"""

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keras_ssl3d.errors import ConfigError, RunError, SSL3DError


def check_parallel_runs(parallel_runs, plan=None):
    if int(parallel_runs) != parallel_runs or parallel_runs < 1:
        raise ConfigError(f"--parallel-runs must be an integer >= 1, got {parallel_runs!r}")
    if parallel_runs > 1 and plan is not None and (plan.replicas > 1 or plan.workers > 1):
        raise ConfigError("--parallel-runs trains runs in separate processes on this machine's CPUs; it cannot be "
                          "combined with data-parallel training on several devices (--distribute)")


class RunPool:
    """Trains ``jobs`` (``[(run_dir, settings)]``, in the order their results will be read) on ``data``, at most
    ``processes`` at a time; ``result(run_dir)`` waits for one and returns its ``result.json``.

    On Ctrl-C (which reaches the processes too: each finishes its batch and saves a checkpoint) no further run
    starts and the running ones are waited for; leaving the context by another error stops them (each resumes
    from its last checkpoint when the study runs again)."""

    def __init__(self, processes, data, jobs, verbose=0, workers=1):
        self._processes = int(processes)
        self._common = {"data": data_spec(data), "verbose": int(verbose), "workers": int(workers)}
        self._queued = [(Path(run_dir), settings) for run_dir, settings in jobs]
        self._running = {}  # run_dir -> (process, its stderr: a temporary file, never a pipe that could fill)
        self._jobs = None  # a temporary folder of job files (the run folders hold only what a run writes)
        self._job_numbers = itertools.count()

    def __enter__(self):
        self._jobs = Path(tempfile.mkdtemp(prefix="keras-ssl3d-study-"))
        self._start_more()
        return self

    def _start_more(self):
        while self._queued and len(self._running) < self._processes:
            run_dir, settings = self._queued.pop(0)
            job = self._jobs / f"job-{next(self._job_numbers)}.json"
            job.write_text(json.dumps({**self._common, "run_dir": str(run_dir),
                                       "settings": dataclasses.asdict(settings)}), encoding="utf-8")
            stderr = tempfile.TemporaryFile(mode="w+", dir=self._jobs)
            self._running[run_dir] = (subprocess.Popen([sys.executable, "-m", __name__, str(job)], stderr=stderr,
                                                       env=thread_limits(self._processes)), stderr)

    def result(self, run_dir):
        """Wait for ``run_dir``'s run (starting others as processes free up) and return its result."""
        from keras_ssl3d.finetune.runner import RESULT_FILE

        run_dir = Path(run_dir)
        while True:
            finished = [d for d, (p, _) in self._running.items() if p.poll() is not None]
            for d in finished:
                self._finish(d)
            self._start_more()
            if run_dir not in self._running and all(d != run_dir for d, _ in self._queued):
                break
            time.sleep(0.2)
        return json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))

    def _finish(self, run_dir):
        process, stderr = self._running.pop(run_dir)
        stderr.seek(0)
        errors = stderr.read()
        stderr.close()
        lines = [line for line in errors.splitlines() if line.strip()]
        if process.returncode == 0:
            for line in lines:  # warnings of the run's own (DataWarning lines ...)
                print(line, file=sys.stderr)
            return
        if process.returncode == INTERRUPTED:
            raise KeyboardInterrupt(lines[-1] if lines else f"{run_dir}: interrupted")
        message = lines[-1].removeprefix("Error: ") if lines else f"exit status {process.returncode}"
        if process.returncode != SSL3DError.exit_code:  # a crash: show what the process said
            sys.stderr.write(errors)
        raise RunError(f"{message} (a parallel run)", path=run_dir)

    def __exit__(self, kind, error, traceback):
        self._queued = []
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            for process, _ in self._running.values():
                process.terminate()
        saved = []
        for run_dir, (process, stderr) in self._running.items():
            if process.wait() == INTERRUPTED:
                saved.append(str(run_dir))
            stderr.close()
        self._running = {}
        shutil.rmtree(self._jobs, ignore_errors=True)
        if kind is not None and issubclass(kind, KeyboardInterrupt) and saved:
            raise KeyboardInterrupt(f"study interrupted; the runs in training saved a checkpoint ({', '.join(saved)}): "
                                    "run the same command again to resume") from None


def thread_limits(processes, environ=None):
    """The environment of a run's process: the machine's cores shared out between the processes.

    Each backend otherwise starts a thread per core in every process, and N processes x all cores on 2 cores
    spin against each other (measured: the demo's runs 2.3x slower each, two at once slower than one at a
    time). A limit the user set is kept."""
    environ = dict(os.environ if environ is None else environ)
    share = str(max(1, (os.cpu_count() or 1) // int(processes)))
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environ.setdefault(name, share)
    environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    return environ


def data_spec(data):
    """What a process needs to open the same `TaskData`: its cache (3D) or image folder (2D)."""
    source = str(data.samples.directory) if data.task == "segmentation" else data.path
    return {"source": source, "size": data.size, "task": data.task, "path": data.path}


def _load_data(spec):
    from keras_ssl3d.data.labelled import load_task_data

    data = load_task_data(spec["source"], size=spec["size"], task=spec["task"])
    return dataclasses.replace(data, path=spec["path"])  # as the study's own (run.json records it)


INTERRUPTED = 130  # the CLI's exit status after Ctrl-C


def _main(job_path):
    """Train one run of a parallel study (its job file written by `RunPool`)."""
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study_run import train_study_run

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    try:
        settings = FinetuneSettings(**job["settings"])
        train_study_run(_load_data(job["data"]), settings, Path(job["run_dir"]), job["verbose"], job["workers"])
    except SSL3DError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"Interrupted: {e}", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
