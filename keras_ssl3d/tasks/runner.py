"""Pretraining as one library call: ``run_pretrain(samples, PretrainSettings(...), out)``.

The one training loop for the pretext tasks, as ``keras_ssl3d.finetune.runner.run_finetune`` is for
fine-tuning: ``keras-ssl3d pretrain``, ``zoo build`` (its recipe's settings), the demo and the
benchmarks all come here. It builds the encoder and task, fits the batch size to the data, holds out
the validation samples, trains resumably through ``keras_ssl3d.training.TrainingRun``, scores the
pretext task next to chance and saves the pretrained model as a preset folder.
"""

import dataclasses
import shutil
from pathlib import Path

from keras_ssl3d.errors import ConfigError, DataError

from keras_ssl3d.names import BLOCKS_2D as PAPER_BLOCKS_2D
from keras_ssl3d.names import FILTERS_3D as PAPER_FILTERS_3D
from keras_ssl3d.names import PRETEXT_BATCH_SIZE as DEFAULT_BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """What a pretraining run trains. ``None`` means the paper's default for ``dims`` (`resolved`).

    ``encoder``: arguments of ``Encoder3D`` / ``Encoder2D`` (``filters``, ``norm`` / ``blocks``...;
    ``in_channels`` comes from the data). ``batch_size`` is per device and is fitted to the data (never
    above the training samples per replica, never below what the task needs). ``task_options``: the
    task's constructor arguments.
    """

    task: str
    dims: int = 3
    size: int | None = None
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    encoder: dict = dataclasses.field(default_factory=dict)
    task_options: dict = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.0
    seed: int = 0
    precision: str = "float32"
    remat: bool = False
    micro_batches: int = 1
    steps_per_epoch: int | None = None

    def resolved(self):
        from keras_ssl3d.tasks.base import DEFAULT_INPUT_SIZE, DEFAULT_LEARNING_RATE

        dims = int(self.dims)
        encoder = dict(self.encoder)
        if dims == 3:
            encoder.setdefault("filters", PAPER_FILTERS_3D)
            encoder.setdefault("norm", "batch")
        else:
            encoder.setdefault("blocks", PAPER_BLOCKS_2D)
        return dataclasses.replace(self, dims=dims, size=int(self.size or DEFAULT_INPUT_SIZE[dims]),
                                   batch_size=int(self.batch_size or DEFAULT_BATCH_SIZE[dims]),
                                   lr=float(self.lr or DEFAULT_LEARNING_RATE[dims]), encoder=encoder)

    def check(self):
        """Settings that cannot go together, refused before any data is read or anything written."""
        from keras_ssl3d.tasks import TASKS
        from keras_ssl3d.tasks.base import RestorationTask

        task, dims = self.task, int(self.dims)
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if self.remat and dims != 3:
            raise ConfigError("--remat applies to the 3D encoder (--dims 3)")
        if self.micro_batches > 1 and (dims != 3 or issubclass(TASKS[task], RestorationTask)):
            raise ConfigError("--micro-batches applies to the 3D encoder of the tasks that call it on their batch "
                              f"(not --dims 2, genesis or mae), got --task {task} --dims {dims}")


@dataclasses.dataclass
class PretrainResult:
    """What `run_pretrain` trained: the task model, the saved preset, the history and the pretext score."""

    model: object
    preset_dir: Path
    hyperparameters: dict
    rows: list
    final: dict
    pretext: dict
    train_size: int
    val_size: int
    steps_per_epoch: int


def make_encoder(dims, in_channels, encoder=None, remat=False, micro_batches=1):
    """A fresh ``Encoder3D`` (``dims`` 3) or ``Encoder2D`` (2) with the arguments ``encoder``."""
    from keras_ssl3d.models import Encoder2D, Encoder3D

    config = {"in_channels": in_channels, **(encoder or {})}
    if dims == 3:
        config.setdefault("filters", PAPER_FILTERS_3D)
        return Encoder3D(**config, remat=remat, micro_batches=micro_batches)
    config.setdefault("blocks", PAPER_BLOCKS_2D)
    return Encoder2D(**config)


def build_task(task, dims, in_channels, size, filters=None, blocks=None, norm=None, remat=False,
               micro_batches=1, task_options=None, encoder=None):
    """The encoder and task model a pretraining run trains (also used by the benchmarks).

    ``task_options``: ``{name: value}`` constructor arguments of the task (``--task-option``).
    ``encoder``: further encoder arguments (a zoo recipe's architecture).
    """
    from keras_ssl3d.tasks import TASKS, make_task

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if dims not in TASKS[task].ranks:
        raise ConfigError(f"--task {task} supports --dims {' or '.join(map(str, TASKS[task].ranks))}, not {dims}")
    config = dict(encoder or {})
    if dims == 3:
        config.update({k: v for k, v in (("filters", filters), ("norm", norm)) if v is not None})
    elif blocks is not None:
        config["blocks"] = blocks
    model_encoder = make_encoder(dims, in_channels, config, remat=remat, micro_batches=micro_batches)
    task_options = dict(task_options or {})
    try:
        return make_task(task, model_encoder, input_size=size, **task_options)
    except (ValueError, TypeError) as e:  # e.g. a patch grid that does not fit the input size
        given = " ".join(f"--task-option {k}={v}" for k, v in task_options.items())
        raise ConfigError(f"{task} cannot be built for --size {size}{' with ' + given if given else ''}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def run_pretrain(samples, settings, out, *, held_out=None, plan=None, resume=False, data_path=None, record=None,
                 metadata=None, preset_dir=None, input_contract=None, callbacks=None, on_start=None, verbose=1,
                 echo=None, command=None, workers=1):
    """Pretrain ``settings.task`` on ``samples``; save the pretrained model; return a `PretrainResult`.

    ``out`` is the run folder (``run.json``, checkpoints, ``history.csv``; ``resume`` continues it).
    Held-out samples are ``held_out`` (scored in one batch of all of them) or else ``settings.val_fraction``
    of ``samples``. ``plan``: a ``keras_ssl3d.distribute.DistributionPlan``. ``record``: more keys for
    ``run.json``'s config; ``metadata``: more preset metadata, a dict or ``function(result) -> dict``;
    ``preset_dir``: where the preset goes (default ``out/encoder``); ``on_start(run folder)``: called
    once the run folder is claimed; ``echo``: progress lines (none by default).
    """
    import keras

    from keras_ssl3d.distribute import DistributionPlan
    from keras_ssl3d.data.splits import split_indices
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.base import pretext_summary
    from keras_ssl3d.training import TrainingRun
    from keras_ssl3d.training.run import record_added
    from keras_ssl3d.training.precision import precision_policy

    s = settings.resolved()
    plan = plan or DistributionPlan("none", [])
    task, dims, where = s.task, s.dims, data_path
    s.check()
    keras.utils.set_random_seed(s.seed)
    if held_out is None:
        train_idx, val_idx = split_indices(len(samples), s.val_fraction, split_seed=s.seed)
    else:
        train_idx, val_idx = list(range(len(samples))), list(range(len(held_out)))
    least = TASKS[task].min_batch_size  # e.g. exemplar's and simclr's negatives are the other samples
    for part, idx in (("training", train_idx), ("validation", val_idx)):
        if len(idx) < least and (part == "training" or s.val_fraction > 0 or held_out is not None):
            raise DataError(f"{task} needs at least {least} {part} samples, got {len(idx)}", path=where)
    batch_size = max(min(s.batch_size, len(train_idx) // plan.replicas), least)  # per device
    if plan.global_batch(batch_size) > len(train_idx):
        raise DataError(f"{len(train_idx)} training samples are fewer than one global batch of "
                        f"{plan.global_batch(batch_size)} ({plan.replicas} replicas x {batch_size})", path=where)
    in_channels = int(getattr(samples, "num_channels", None) or samples.shape[-1])  # a source or an array
    with plan.scope():
        with precision_policy(s.precision):
            model = build_task(task, dims, in_channels, s.size, encoder=s.encoder, remat=s.remat,
                               micro_batches=s.micro_batches, task_options=s.task_options)
        model.compile(learning_rate=s.lr)
    if echo and getattr(model, "augment_note", None):  # exemplar, simclr: where augmentation runs (augment_on)
        echo(model.augment_note)
    per_step = batch_size * model.encoder_inputs_per_sample  # what the encoder of one device sees in a step
    if s.micro_batches > per_step:
        raise ConfigError(f"--micro-batches {s.micro_batches} is more than the {per_step} inputs the encoder gets "
                          f"per step ({task}, batch {batch_size}): every part needs at least one")
    hyperparameters = _hyperparameters(s, batch_size, model)
    config = dict(hyperparameters, distribution=plan.describe(batch_size), val_fraction=s.val_fraction,
                  micro_batches=s.micro_batches, **(record or {}))
    if data_path is not None:
        config["data"] = str(Path(data_path).resolve())
    config = record_added(config, "pretrain")  # (older runs still resume)
    # The datasets first: they check the samples fit the task before anything is written.
    dataset = model.dataset(samples, batch_size=plan.global_batch(batch_size), seed=s.seed, indices=train_idx,
                            workers=workers, shard=plan.shard)
    validation, val_batch = None, None
    if held_out is not None:
        val_batch = max(len(held_out), least)
        validation = model.held_out_dataset(held_out, batch_size=val_batch, seed=s.seed + 1)
    elif len(val_idx):
        val_batch = max(min(plan.global_batch(batch_size), len(val_idx)), least * plan.replicas)
        validation = model.held_out_dataset(samples, batch_size=val_batch, seed=s.seed + 1, indices=val_idx,
                                            shard=plan.shard)
    out_dir = plan.output_dir(out)
    run = TrainingRun(out_dir, config=config, resume=resume, seed=s.seed, command=command)
    if on_start is not None:
        on_start(out_dir)
    if echo is not None:
        held = f" (+ {len(val_idx)} held out for validation)" if len(val_idx) else ""
        spread = f" x {plan.replicas} replicas ({plan.kind})" if plan.replicas > 1 else ""
        echo(f"Pretraining {task} ({dims}D) on {len(train_idx)} samples{held} of {s.size}^{dims} x {in_channels}, "
             f"batch {batch_size}{spread}, lr {s.lr:g}, {s.epochs} epochs -> {out}")
    fit_kwargs = {"steps_per_epoch": int(s.steps_per_epoch)} if s.steps_per_epoch else {}
    with plan.scope():  # the dataset shuffles by (seed, epoch) itself
        history = run.fit(model, x=dataset, epochs=s.epochs, verbose=verbose, shuffle=False,
                          validation_data=validation, callbacks=callbacks, **fit_kwargs)
    rows = list(getattr(history, "rows", []))
    last = history.history if isinstance(getattr(history, "history", None), dict) else {}
    result = PretrainResult(
        model=model, preset_dir=Path(preset_dir) if preset_dir is not None else out_dir / "encoder",
        hyperparameters=hyperparameters, rows=rows,
        final={k: float(v[-1]) for k, v in last.items() if v and v[-1] is not None},
        pretext=pretext_summary(rows, model.chance_loss, model.chance_accuracy(val_batch or batch_size)),
        train_size=len(train_idx), val_size=len(val_idx), steps_per_epoch=int(s.steps_per_epoch or len(dataset)))
    _save(result, s, data_path, in_channels, metadata, input_contract)
    if not plan.is_chief:  # another process wrote the run folder
        shutil.rmtree(out_dir, ignore_errors=True)
        return result
    if echo is not None:
        what = "encoder" if model.pretrained_model() is model.encoder else "encoder and decoder (a U-Net preset)"
        summary = ", ".join(f"{k} {v[-1]:.4f}" for k, v in last.items() if v)
        echo(f"Saved the pretrained {what} to {result.preset_dir}" + (f" ({summary})" if summary else ""))
    return result


def _hyperparameters(s, batch_size, model):
    """What the run trained with (run.json and the preset's metadata)."""
    hyperparameters = {
        "task": s.task, "dims": s.dims, "size": s.size, "epochs": s.epochs, "batch_size": batch_size,
        "learning_rate": s.lr, "optimizer": "adam", "seed": s.seed, "precision": s.precision, "remat": s.remat,
        "encoder": {k: list(v) if isinstance(v, tuple) else v for k, v in s.encoder.items()},
        "task_config": {k: v for k, v in model.get_config().items() if k not in ("encoder", "name", "trainable")},
    }
    if s.micro_batches > 1:  # (only then, so runs made before the option still resume; batch norm saw the parts)
        hyperparameters["micro_batches"] = s.micro_batches
    return hyperparameters


def _save(result, s, data_path, in_channels, metadata, input_contract):
    """The preset folder: the encoder, or the whole U-Net of the tasks that pretrain a decoder too."""
    model = result.model
    if s.remat or s.micro_batches > 1:  # settings of this run (run.json), not of the preset: it loads without them
        from keras_ssl3d.layers import set_micro_batches, set_remat

        set_remat(model, False)
        set_micro_batches(model, 1)
    info = {"task": s.task, "hyperparameters": result.hyperparameters,
            "pretraining_data": {
                "path": None if data_path is None else str(Path(data_path).resolve()),
                "num_samples": int(result.train_size), "num_validation_samples": int(result.val_size),
                "in_channels": in_channels, "size": s.size,
                "preprocessing": "foreground crop, resize, min-max to [0, 1]" if s.dims == 3
                else "resize, scale to [0, 1]"}}
    info.update(metadata(result) if callable(metadata) else (metadata or {}))
    model.pretrained_model().save_pretrained(result.preset_dir, metadata=info, input_contract=input_contract)
