"""Data-parallel training on several devices and machines, with the engines users already run.

``plan = distribute.plan("mirrored", devices=2)``; build, compile and fit inside ``plan.scope()``,
feeding ``plan.global_batch(per_device)`` samples per batch. Behind it:

- TensorFlow: ``tf.distribute.MirroredStrategy`` over the local devices (see ``tf_strategy``). Several
  machines (``MultiWorkerMirroredStrategy``) are refused in one line: Keras 3 cannot fit under it yet
  (keras-team/keras#20585, reproduced here with two workers on 127.0.0.1).
- JAX: ``keras.distribution.DataParallel`` over the devices (``keras.distribution.initialize`` first
  for several hosts, from the ``KERAS_DISTRIBUTION_*`` variables).
- PyTorch: the released Keras has no data-parallel engine for it; asking for one is a one-line error.

Semantics across replicas: each replica computes the loss on its share of the global batch and the
gradients are summed with the loss scaled by ``1 / replicas``, so a mean loss equals the
single-device one on the global batch. Under ``tf.distribute`` everything a loss takes from "the
other samples of the batch" is per replica: InfoNCE's negatives (CPC) and the triplet loss's
negatives (exemplar) come from the replica's own samples, and BatchNormalization uses per-replica
statistics (Keras' default); use ``--norm group``/``instance`` where that matters. JAX's
``DataParallel`` shards one global computation, so negatives and batch statistics are global there.

``KERAS_SSL3D_CPU_DEVICES=N`` splits the host CPU into N logical devices (TensorFlow logical
devices, JAX ``--xla_force_host_platform_device_count``) so that the real strategies run without
accelerators, as the tests do.
"""

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

from keras_ssl3d.errors import ConfigError

from keras_ssl3d.names import DISTRIBUTION_STRATEGIES as STRATEGIES  # noqa: E402
CPU_DEVICES_ENV = "KERAS_SSL3D_CPU_DEVICES"
_XLA_FLAG = "--xla_force_host_platform_device_count"


def cpu_device_count():
    """The number of logical CPU devices asked for with ``KERAS_SSL3D_CPU_DEVICES`` (0: not asked)."""
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not value:
        return 0
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{CPU_DEVICES_ENV} must be a positive integer, got {value!r}")
    return count


def apply_cpu_devices_env():
    """Before JAX is imported: turn ``KERAS_SSL3D_CPU_DEVICES`` into XLA's host device count.

    Called when ``keras_ssl3d`` is imported (a no-op without the variable or when ``XLA_FLAGS``
    already sets the count). TensorFlow's logical devices are made in ``plan`` instead, since they
    need TensorFlow itself.
    """
    count = cpu_device_count()
    flags = os.environ.get("XLA_FLAGS", "")
    if count and _XLA_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_FLAG}={count}".strip()


@dataclasses.dataclass
class DistributionPlan:
    """How a run is spread: the engine, its devices, and whether this process writes the results."""

    kind: str  # "none", "mirrored", "multi-worker" (TensorFlow) or "data-parallel" (JAX)
    devices: list
    replicas: int = 1
    workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    engine: object = dataclasses.field(default=None, repr=False)

    def scope(self):
        """Build, compile and fit inside this context (a no-op without distribution)."""
        if self.engine is None:
            return contextlib.nullcontext()
        return self.engine.scope()

    @property
    def shard(self):
        """``(this process, processes)`` when several processes each feed their part of every batch."""
        return (self.worker_index, self.workers) if self.workers > 1 else None

    def global_batch(self, per_device):
        """Samples per step over all replicas (``--batch-size`` is per device)."""
        return int(per_device) * self.replicas

    def output_dir(self, run_dir):
        """Where this process writes the run: the run folder on the chief; on other workers a scratch
        folder (they take part in every step, but one writer keeps the run folder consistent)."""
        if self.is_chief:
            return Path(run_dir)
        return Path(tempfile.mkdtemp(prefix=f"keras-ssl3d-worker{self.worker_index}-"))

    def describe(self, per_device_batch=None):
        """What run.json records."""
        record = {"strategy": self.kind, "replicas": self.replicas, "workers": self.workers,
                  "devices": list(self.devices)}
        if per_device_batch is not None:
            record.update(per_device_batch=int(per_device_batch), global_batch=self.global_batch(per_device_batch))
        return record


def local_devices():
    """``(accelerators, cpus)``: the device names a strategy can use on this machine."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_ssl3d.distribute import tf_strategy

        return tf_strategy.local_devices(cpu_device_count())
    if backend == "jax":
        import jax

        devices = jax.local_devices()
        accelerators = [f"{d.platform}:{d.id}" for d in devices if d.platform != "cpu"]
        return accelerators, [f"cpu:{d.id}" for d in devices if d.platform == "cpu"]
    return [], ["cpu:0"]


def _device_count(devices, available, strategy):
    if devices in (None, "all"):
        return len(available)
    try:
        count = int(devices)
    except (TypeError, ValueError):
        raise ConfigError(f"--devices must be a positive integer or 'all', got {devices!r}") from None
    if count < 1:
        raise ConfigError(f"--devices must be >= 1, got {count}")
    if count > len(available):
        raise ConfigError(f"--distribute {strategy} --devices {count}: only {len(available)} device(s) here "
                          f"({', '.join(available) or 'none'}); set {CPU_DEVICES_ENV}=N to split the CPU for tests")
    return count


def plan(strategy="auto", devices="all"):
    """The `DistributionPlan` for ``--distribute STRATEGY --devices N|all`` on this backend.

    ``auto``: all local accelerators when there is more than one (or the logical CPU devices of
    ``KERAS_SSL3D_CPU_DEVICES``), else no distribution. ``mirrored``: the local devices, accelerators
    if any, else CPUs. ``multi-worker``: every process's devices (JAX, from the
    ``KERAS_DISTRIBUTION_*`` variables; refused on TensorFlow, see the module docstring).
    """
    import keras

    if strategy not in STRATEGIES:
        raise ConfigError(f"--distribute must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    backend = keras.backend.backend()
    if strategy == "none":
        return DistributionPlan("none", [])
    if backend == "torch" and strategy != "auto":
        raise _torch_error(strategy)
    if strategy == "multi-worker":  # first: listing devices would start TensorFlow's context too early
        if backend == "tensorflow":
            from keras_ssl3d.distribute import tf_strategy

            return tf_strategy.multi_worker_plan(DistributionPlan)
        return _jax_plan(strategy, devices, [])
    accelerators, cpus = local_devices()
    available = accelerators or (cpus if cpu_device_count() or strategy != "auto" else [])
    if strategy == "auto":
        if len(available) <= 1:
            return DistributionPlan("none", [])
        strategy = "mirrored"
    if backend == "torch":
        raise _torch_error(strategy)
    if backend == "tensorflow":
        from keras_ssl3d.distribute import tf_strategy

        chosen = available[:_device_count(devices, available, strategy)]
        return tf_strategy.mirrored_plan(DistributionPlan, chosen)
    if backend == "jax":
        return _jax_plan(strategy, devices, available)
    raise ConfigError(f"--distribute {strategy}: unsupported backend {backend!r}")


def _torch_error(strategy):
    import keras

    return ConfigError(f"--distribute {strategy} is not supported on the PyTorch backend with Keras "
                       f"{keras.__version__} (keras.distribution has no PyTorch engine in this release); "
                       "use KERAS_BACKEND=tensorflow or jax")


def _jax_plan(strategy, devices, available):
    import keras

    if strategy == "multi-worker":
        try:
            keras.distribution.initialize()
        except Exception as e:  # missing/invalid KERAS_DISTRIBUTION_* settings, unreachable coordinator
            raise ConfigError(f"--distribute multi-worker on JAX could not start ({e}); set "
                              "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and "
                              "KERAS_DISTRIBUTION_PROCESS_ID") from None
        import jax

        names = keras.distribution.list_devices()
        # Each process feeds its own part of every global batch (VolumeBatches(shard=plan.shard)).
        engine = keras.distribution.DataParallel(devices=names, auto_shard_dataset=False)
        return DistributionPlan("data-parallel", names, len(names), jax.process_count(), jax.process_index(),
                                jax.process_index() == 0, engine)
    chosen = available[:_device_count(devices, available, strategy)]
    if len(chosen) <= 1:
        return DistributionPlan("none", chosen)
    engine = keras.distribution.DataParallel(devices=chosen)
    return DistributionPlan("data-parallel", chosen, len(chosen), engine=engine)
