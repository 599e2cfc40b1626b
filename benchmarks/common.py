"""Measurement helpers shared by the benchmark scripts.

Every script prints one JSON object per line (``emit``) and nothing else on stdout that starts
with ``{``; the runner (``benchmarks/run.py``) runs each configuration in its own subprocess, so
the peak RSS a script reports (``peak_rss_mb``) belongs to that one configuration.

This module imports neither Keras nor a backend at import time: the backend must be chosen
(``KERAS_BACKEND``) before Keras is imported, which each script does first.

FLOPs are counted analytically (``count_flops``) by walking a Keras model's graph with symbolic
shapes: a convolution's forward cost is ``2 * prod(kernel) * Cin/groups * Cout * output_positions``
(a transposed convolution: ``... * input_positions``), a dense layer ``2 * in * out * rows``, a
GRU ``2 * (in + units) * 3 * units`` per step, an einsum score matrix ``2 * Q * K * E``. Bias
adds, normalization, activations, pooling and the optimizer update are element-wise and not
counted (a few % of a conv net). A training step is taken as 3x the forward pass: the backward
pass computes the gradient with respect to each layer's input and with respect to its weights,
each costing about one forward pass (the first layer's input gradient is not needed, so 3x
slightly over-counts by ``1/3`` of the first layer's cost).
"""

import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --------------------------------------------------------------------------- JSON lines

def package_names():
    """``keras_ssl3d/names.py`` (task table, choices) loaded by path: importing the package would import
    Keras before ``select_backend`` picks the backend."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("keras_ssl3d_names", ROOT / "keras_ssl3d" / "names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def emit(record):
    """Print one measurement as a single JSON line (flushed, so a killed run keeps it)."""
    print(json.dumps(record, default=_jsonable, allow_nan=True), flush=True)


def parse_json_lines(text):
    """The JSON objects among the lines of ``text``; other lines (library logs) are ignored."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


# --------------------------------------------------------------------------- timing & memory

def time_calls(fn, steps=5, warmup=1):
    """Call ``fn()`` ``warmup`` times untimed, then ``steps`` times timed.

    ``fn`` must block until its work is done (Keras' ``train_on_batch`` returns numpy values, so
    it does). Returns ``{"median_s", "min_s", "times_s", "warmup_s", "results"}`` where
    ``results`` are ``fn``'s return values (warm-up first).
    """
    warm = warm_up(fn, warmup)
    return time_interleaved([fn], steps, [warm])[0]


def warm_up(fn, warmup=1):
    """``warmup`` untimed calls (tracing, compilation): ``{"warmup_s", "results"}``."""
    results, times = [], []
    for _ in range(int(warmup)):
        t0 = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t0)
    return {"warmup_s": times, "results": results}


def time_interleaved(fns, steps, warmed=None):
    """Time ``steps`` calls of each of ``fns``, alternating them (a, b, a, b, ...).

    Comparing two steps measured one after the other lets slow drifts of the machine (another
    process, clock changes, memory growth) fall on one of them; alternating puts both under the
    same conditions, so their ratio is fair. ``warmed`` are the matching ``warm_up`` results.
    Returns one ``time_calls``-style dict per function.
    """
    warmed = warmed or [{"warmup_s": [], "results": []} for _ in fns]
    out = [{"times_s": [], "warmup_s": w["warmup_s"], "results": list(w["results"])} for w in warmed]
    for _ in range(int(steps)):
        for fn, timing in zip(fns, out):
            t0 = time.perf_counter()
            timing["results"].append(fn())
            timing["times_s"].append(time.perf_counter() - t0)
    for timing in out:
        times = timing["times_s"]
        timing["median_s"] = statistics.median(times) if times else None
        timing["min_s"] = min(times) if times else None
    return out


def peak_rss_mb():
    """Peak resident set size of this process in MiB (``ru_maxrss``; ``VmHWM`` if larger)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    try:
        status = Path("/proc/self/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
        if match:
            peak = max(peak, int(match.group(1)) * 1024)
    except OSError:
        pass
    return peak / 2**20


# --------------------------------------------------------------------------- machine

def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _package_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_flags():
    match = re.search(r"^flags\s*:\s*(.*)$", _read("/proc/cpuinfo"), re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def machine_info():
    """CPU model, cores, memory, relevant CPU features and package versions (no heavy imports)."""
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    family = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.MULTILINE)
    cpu_model = re.search(r"^model\s*:\s*(\d+)", cpuinfo, re.MULTILINE)
    meminfo = re.search(r"^MemTotal:\s+(\d+)\s+kB", _read("/proc/meminfo"), re.MULTILINE)
    flags = cpu_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        usable = os.cpu_count()
    features = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
                if f in flags]
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cpu_family_model": f"{family.group(1)}/{cpu_model.group(1)}" if family and cpu_model else None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": round(int(meminfo.group(1)) / 2**20, 1) if meminfo else None,
        "cpu_features": features,
        "python": platform.python_version(),
        "versions": {name: _package_version(name) for name in
                     ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy")},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------- backend

def select_backend(backend):
    """Set ``KERAS_BACKEND`` (must run before ``import keras``) and quieten TensorFlow logs."""
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise RuntimeError(f"keras is already imported with backend {current!r}; cannot switch to {backend!r}")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# --------------------------------------------------------------------------- FLOP counter

class FlopCounter:
    """Analytic forward FLOPs of a Keras 3 model for concrete input shapes (see module docstring).

    Walks functional graphs (task models, ``Encoder3D``/``Encoder2D``, nested functional models)
    node by node with symbolic ``KerasTensor`` shapes, and descends into the package's composite
    layers (``ResidualBlock``, ``UNetDecoder3D``, heads, CPC layers) and ``Sequential``.

    After ``count(model, inputs)``: ``total`` forward FLOPs, ``by_type`` per layer class,
    ``calls`` the (model name, input shapes) of every functional model called (to find the
    tensors a task's encoder sees), ``uncounted`` the names of weighted layers it could not
    cost (so a low count is never silent).
    """

    _ELEMENTWISE = ("BatchNormalization", "GroupNormalization", "LayerNormalization", "Normalization",
                    "UnitNormalization", "Dropout")

    def __init__(self):
        self.total = 0
        self.by_type = {}
        self.calls = []
        self.uncounted = []

    # public entry point
    def count(self, model, inputs):
        """``inputs``: a (nested) structure of shapes (tuples with a concrete batch) or arrays."""
        import keras

        def to_tensors(x):
            if hasattr(x, "shape"):  # an array
                return keras.KerasTensor(tuple(int(s) for s in x.shape), dtype=str(x.dtype))
            if isinstance(x, (list, tuple)) and x and all(isinstance(s, int) for s in x):  # a shape
                return keras.KerasTensor(tuple(x), dtype="float32")
            if isinstance(x, (list, tuple)):
                return [to_tensors(item) for item in x]
            if isinstance(x, dict):
                return {key: to_tensors(value) for key, value in x.items()}
            raise TypeError(f"cannot make a symbolic input from {type(x).__name__}")

        self._layer(model, (to_tensors(inputs),), {})
        return self.total

    def _add(self, kind, flops):
        flops = int(flops)
        self.total += flops
        self.by_type[kind] = self.by_type.get(kind, 0) + flops

    # dispatch
    def _layer(self, op, args, kwargs):
        from keras.src.layers.convolutional.base_conv import BaseConv
        from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
        from keras.src.models.functional import Functional
        from keras.src.models.sequential import Sequential

        import keras

        name = type(op).__name__
        if isinstance(op, Sequential):
            x = args[0]
            for layer in op.layers:
                x = self._layer(layer, (x,), {})
            return x
        if isinstance(op, Functional):
            inputs = args[0]
            self.calls.append({"model": op.name, "class": name,
                               "input_shapes": [tuple(t.shape) for t in keras.tree.flatten(inputs)]})
            outputs = op._run_through_graph(inputs, operation_fn=lambda sub: self._bind(sub))
            return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 \
                and not isinstance(op.outputs, (list, tuple)) else outputs
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            for cls in type(op).__mro__:
                handler = getattr(self, f"_{cls.__name__}", None)
                if handler is not None:
                    break
        if isinstance(op, BaseConvTranspose):
            return self._conv_transpose(op, args, kwargs)
        if isinstance(op, BaseConv):
            return self._conv(op, args, kwargs)
        if isinstance(op, keras.layers.Dense):
            return self._dense(op, args, kwargs)
        if isinstance(op, keras.layers.RNN) or name in ("GRU", "LSTM", "SimpleRNN"):
            return self._rnn(op, args, kwargs)
        if handler is not None:
            return handler(op, args, kwargs)
        if isinstance(op, keras.layers.Layer) and op.weights and not name.endswith(self._ELEMENTWISE):
            self.uncounted.append(f"{op.name} ({name})")
        return op.compute_output_spec(*args, **kwargs)

    def _bind(self, op):
        return lambda *args, **kwargs: self._layer(op, args, kwargs)

    # primitive layers
    def _conv(self, layer, args, kwargs):
        x = args[0]
        out = layer.compute_output_spec(x)
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        cin = x.shape[-1] if channels_last else x.shape[1]
        positions = math.prod(out.shape[:-1]) if channels_last else out.shape[0] * math.prod(out.shape[2:])
        groups = getattr(layer, "groups", 1) or 1
        flops = 2 * math.prod(layer.kernel_size) * (cin // groups) * layer.filters * positions
        self._add(type(layer).__name__, flops)
        return out

    def _conv_transpose(self, layer, args, kwargs):
        x = args[0]
        out = layer.compute_output_spec(x)
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        cin = x.shape[-1] if channels_last else x.shape[1]
        positions = math.prod(x.shape[:-1]) if channels_last else x.shape[0] * math.prod(x.shape[2:])
        self._add(type(layer).__name__, 2 * math.prod(layer.kernel_size) * cin * layer.filters * positions)
        return out

    def _dense(self, layer, args, kwargs):
        x = args[0]
        out = layer.compute_output_spec(x)
        in_features = x.shape[-1]
        rows = math.prod(x.shape[:-1])
        self._add("Dense", 2 * in_features * layer.units * rows)
        return out

    def _rnn(self, layer, args, kwargs):
        x = args[0]
        out = layer.compute_output_spec(x)
        cell = layer.cell
        kernel = math.prod(cell.kernel.shape)
        recurrent = math.prod(cell.recurrent_kernel.shape)
        steps_rows = math.prod(x.shape[:-1])  # batch * time steps
        self._add(type(layer).__name__, 2 * (kernel + recurrent) * steps_rows)
        return out

    # keras_ssl3d composite layers
    def _ResidualBlock(self, block, args, kwargs):
        x = args[0]
        h = self._conv(block.conv1, (x,), {})
        self._conv(block.conv2, (h,), {})
        if block.shortcut_conv is not None:
            self._conv(block.shortcut_conv, (x,), {})
        return block.compute_output_spec(x)

    def _UNetDecoder3D(self, decoder, args, kwargs):
        import keras

        features = list(args[0])
        x = features[-1]
        for i, (up, block) in enumerate(zip(decoder.up_layers, decoder.blocks)):
            x = self._layer(up, (x,), {})
            skip = features[-2 - i]
            x = keras.KerasTensor((*skip.shape[:-1], x.shape[-1] + skip.shape[-1]), dtype=x.dtype)
            x = self._ResidualBlock(block, (x,), {})
        return decoder.compute_output_spec(features)

    def _MLPHead(self, head, args, kwargs):
        import keras

        x = args[0]
        in_features = head.hidden.kernel.shape[0]  # ordered heads flatten (N, P, E) -> (N, P*E)
        rows = math.prod(x.shape) // in_features
        flat = keras.KerasTensor((rows, in_features), dtype=x.dtype)
        hidden = self._dense(head.hidden, (flat,), {})
        self._dense(head.out, (hidden,), {})
        return head.compute_output_spec(*args, **kwargs)

    def _CPCContext(self, layer, args, kwargs):
        import keras

        x = args[0]
        rows = keras.KerasTensor((x.shape[0], x.shape[1], math.prod(x.shape[2:])), dtype=x.dtype)
        self._rnn(layer.gru, (rows,), {})
        return layer.compute_output_spec(x)

    def _CPCPredictor(self, layer, args, kwargs):
        import keras

        context = args[0]
        for step, dense in enumerate(layer.projections, start=1):
            rows = layer.grid[0] - step
            part = keras.KerasTensor((context.shape[0], rows, context.shape[2]), dtype=context.dtype)
            self._dense(dense, (part,), {})
        return layer.compute_output_spec(context)

    def _NTXentScores(self, layer, args, kwargs):
        n, v, e = args[0].shape  # every one of the n * v views against every view
        self._add("NTXentScores", 2 * n * v * n * v * e)
        return layer.compute_output_spec(*args, **kwargs)

    def _ContrastiveScores(self, layer, args, kwargs):
        queries, keys = args[0], args[1]
        n, q, e = queries.shape
        total_keys = math.prod(keys.shape[:-1])
        self._add("ContrastiveScores", 2 * n * q * total_keys * e)
        return layer.compute_output_spec(*args, **kwargs)


def count_flops(model, inputs):
    """Forward FLOPs of ``model`` on ``inputs`` (shapes with a concrete batch, or arrays).

    Returns the ``FlopCounter`` (``.total``, ``.by_type``, ``.calls``, ``.uncounted``).
    """
    counter = FlopCounter()
    counter.count(model, inputs)
    return counter


TRAIN_FLOPS_PER_FORWARD = 3  # forward + input gradients + weight gradients (see module docstring)


# --------------------------------------------------------------------------- subprocesses

def run_json_subprocess(cmd, timeout_s, env=None, cwd=None):
    """Run ``cmd`` in its own process group; returns ``(records, status, info)``.

    ``status`` is ``"ok"``, ``"timeout"`` (the whole process group is killed) or ``"error"``
    (non-zero exit). ``records`` are the JSON lines printed before it ended either way.
    """
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if env:
        full_env.update(env)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            cwd=str(cwd or ROOT), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        status = "ok" if proc.returncode == 0 else "error"
    except subprocess.TimeoutExpired:
        import signal

        try:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's group only
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        status = "timeout"
    wall = time.perf_counter() - t0
    info = {"returncode": proc.returncode, "wall_s": round(wall, 2),
            "stderr_tail": "\n".join((err or "").strip().splitlines()[-6:])}
    return parse_json_lines(out or ""), status, info


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (no half-written file).

    (``keras_ssl3d.fileio`` does the same, but importing the package imports Keras, which the
    runner process avoids: it only starts subprocesses.)
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
