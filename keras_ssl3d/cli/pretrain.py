"""``keras-ssl3d pretrain``: train an encoder with one of the pretext tasks, resumably."""

from pathlib import Path

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.config_file import config_option, write_resolved_config
from keras_ssl3d.cli.distribution import distribution_options
from keras_ssl3d.cli.plan import apply_memory_budget, memory_budget_option
from keras_ssl3d.cli.resume import FLAG, rerun_recorded, resolve_resume, resume_option
from keras_ssl3d.cli.streaming import cache_option, workers_option
from keras_ssl3d.cli.task_options import parse_task_options
from keras_ssl3d.cli.runtime import check_size
from keras_ssl3d.errors import ConfigError, DataError
from keras_ssl3d.finetune.parsing import parse_int_list
from keras_ssl3d.task_names import TASK_NAMES


def build_task(task, dims, in_channels, size, filters=None, blocks=None, norm="batch", remat=False,
               micro_batches=1, task_options=None):
    """The encoder and task model the CLI trains (also used by the benchmarks).

    ``task_options``: ``{name: value}`` constructor arguments of the task (``--task-option``), already
    checked by ``keras_ssl3d.cli.task_options.parse_task_options``.
    """
    from keras_ssl3d.models import Encoder2D, Encoder3D
    from keras_ssl3d.tasks import TASKS, make_task

    if dims not in TASKS[task].ranks:
        raise ConfigError(f"--task {task} supports --dims {' or '.join(map(str, TASKS[task].ranks))}, not {dims}")
    if dims == 3:
        encoder = Encoder3D(in_channels=in_channels, filters=filters or (32, 64, 128, 256, 512), norm=norm,
                            remat=remat, micro_batches=micro_batches)
    else:
        encoder = Encoder2D(in_channels=in_channels, blocks=blocks or (6, 12, 24, 16))
    task_options = dict(task_options or {})
    try:
        return make_task(task, encoder, input_size=size, **task_options)
    except (ValueError, TypeError) as e:  # e.g. a patch grid that does not fit the input size
        given = " ".join(f"--task-option {k}={v}" for k, v in task_options.items())
        raise ConfigError(f"{task} cannot be built for --size {size}{' with ' + given if given else ''}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


@click.command("pretrain")
@config_option
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="The self-supervised task (required unless --resume RUN_DIR).")
@click.option("--dims", type=click.Choice(["2", "3"]), default="3", show_default=True,
              help="3: NIfTI volumes and Encoder3D; 2: PNG/JPEG images and Encoder2D (DenseNet).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Folder of NIfTI volumes (or a preprocessed cache); 2D: folder of images.")
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder: checkpoints, run.json, history.csv and the final encoder/.")
@click.option("--epochs", type=options.EPOCHS, default=10, show_default=True)
@click.option("--batch-size", type=options.BATCH_SIZE, default=None,
              help="Samples per batch [default: 2 in 3D, 16 in 2D].")
@click.option("--lr", type=options.LEARNING_RATE, default=None,
              help="Adam learning rate [default: the paper's 1e-3 in 3D, 5e-4 in 2D].")
@click.option("--size", type=options.SIZE, default=None,
              help="Inputs are resized to size^3 (3D) or size^2 (2D) [default: 128 / 224].")
@click.option("--filters", default="32,64,128,256,512", show_default=True,
              help="3D encoder widths per level, comma-separated.")
@click.option("--blocks", default="6,12,24,16", show_default=True,
              help="2D encoder (DenseNet) layers per dense block, comma-separated.")
@click.option("--norm", type=click.Choice(["batch", "group", "instance", "none"]), default="batch",
              show_default=True, help="3D encoder normalization.")
@click.option("--val-fraction", type=options.VAL_FRACTION, default=0.0, show_default=True,
              help="Hold out this fraction of the subjects and report the pretext loss/accuracy on them each epoch.")
@click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE",
              help="A constructor argument of the task (repeatable), e.g. --task-option grid=3 --task-option "
                   "jitter=1; values are YAML (3, 0.2, true, [1, 2]). See the task's docstring for its settings.")
@cache_option
@workers_option
@distribution_options
@options.memory_options("the encoder")
@click.option("--micro-batches", type=options.MICRO_BATCHES, default=1, show_default=True,
              help="3D: the encoder runs each step's batch in this many sequential, rematerialised parts: the "
                   "activations of one part at a time (Exemplar and SimCLR at 128^3 on 8 GB). The loss is still "
                   "the whole batch's (in-batch negatives stay); batch norm normalises each part on its own.")
@memory_budget_option
@options.tensorboard_option
@click.option("--seed", type=options.SEED, default=0, show_default=True)
@resume_option
@click.pass_context
def pretrain(ctx, task, dims, data, run_dir, epochs, batch_size, lr, size, filters, blocks, norm, val_fraction,
             task_option, cache, workers, distribute_strategy, devices, remat, precision, micro_batches, memory_budget,
             tensorboard, seed, resume):
    """Pretrain an encoder with a self-supervised task; writes OUT/encoder/ (a preset folder).

    Genesis and MAE pretrain a decoder too: OUT/encoder/ then holds the whole U-Net, and fine-tuning
    from it starts both encoder and decoder.
    """
    if resume not in (None, FLAG) and (task is None or data is None):
        return rerun_recorded(ctx, resume, "pretrain")
    run_dir, resume = resolve_resume(resume, run_dir)
    run_dir = Path(run_dir)
    for option, value in (("--task", task), ("--data", data)):
        if value is None:
            raise click.UsageError(f"Missing option '{option}'.")
    import keras

    from keras_ssl3d import distribute
    from keras_ssl3d.data import open_unlabeled
    from keras_ssl3d.finetune.runner import split_indices
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.base import DEFAULT_INPUT_SIZE, DEFAULT_LEARNING_RATE, RestorationTask
    from keras_ssl3d.training import TrainingRun
    from keras_ssl3d.training.run import check_run_dir
    from keras_ssl3d.training.tensorboard import tensorboard_callbacks
    from keras_ssl3d.training.precision import precision_policy

    dims = int(dims)
    if remat and dims != 3:
        raise ConfigError("--remat applies to the 3D encoder (--dims 3)")
    if micro_batches > 1 and (dims != 3 or issubclass(TASKS[task], RestorationTask)):
        raise ConfigError("--micro-batches applies to the 3D encoder of the tasks that call it on their batch "
                          f"(not --dims 2, genesis or mae), got --task {task} --dims {dims}")
    size = int(size or DEFAULT_INPUT_SIZE[dims])
    batch_size = int(batch_size or (2 if dims == 3 else 16))
    filters = parse_int_list(filters, "--filters") if dims == 3 else None
    blocks = parse_int_list(blocks, "--blocks") if dims == 2 else None
    learning_rate = float(lr or DEFAULT_LEARNING_RATE[dims])
    task_options = parse_task_options(task_option, task, TASKS[task])
    if dims == 3:  # before any data is read: a typo in --filters/--size is refused in words, not by an OOM
        check_size(filters, size, max(1, batch_size // micro_batches))

    check_run_dir(run_dir)
    plan = distribute.plan(distribute_strategy, devices)
    keras.utils.set_random_seed(seed)
    samples = open_unlabeled(data, size, rank=dims, cache_dir=cache, cache_root=run_dir.parent, workers=workers,
                             echo=click.echo)
    if len(samples) == 0:
        raise DataError("no volumes found" if dims == 3 else "no images found", path=data)
    train_idx, val_idx = split_indices(len(samples), val_fraction, split_seed=seed)
    least = TASKS[task].min_batch_size  # e.g. exemplar's and simclr's negatives are the other samples
    for part, idx in (("training", train_idx), ("validation", val_idx)):
        if len(idx) < least and (part == "training" or val_fraction > 0):
            raise DataError(f"{task} needs at least {least} {part} samples, got {len(idx)}", path=data)
    batch_size = max(min(batch_size, len(train_idx) // plan.replicas), least)  # per device
    if plan.global_batch(batch_size) > len(train_idx):
        raise DataError(f"{len(train_idx)} training samples are fewer than one global batch of "
                        f"{plan.global_batch(batch_size)} ({plan.replicas} replicas x {batch_size})", path=data)
    in_channels = int(samples.num_channels)
    if dims == 3:
        remat, micro_batches = apply_memory_budget(memory_budget, task, size, batch_size, filters, in_channels, norm,
                                                   precision, remat, micro_batches, task_options)

    with plan.scope():
        with precision_policy(precision):
            model = build_task(task, dims, in_channels, size, filters=filters, blocks=blocks, norm=norm, remat=remat,
                               micro_batches=micro_batches, task_options=task_options)
        model.compile(learning_rate=learning_rate)
    if getattr(model, "augment_note", None):  # exemplar, simclr: where augmentation runs (augment_on)
        click.echo(model.augment_note)
    per_step = batch_size * model.encoder_inputs_per_sample  # what the encoder of one device sees in a step
    if micro_batches > per_step:
        raise ConfigError(f"--micro-batches {micro_batches} is more than the {per_step} inputs the encoder gets per "
                          f"step ({task}, batch {batch_size}): every part needs at least one")
    hyperparameters = {
        "task": task, "dims": dims, "size": size, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "optimizer": "adam", "seed": seed, "precision": precision, "remat": remat,
        "encoder": {"filters": list(filters), "norm": norm} if dims == 3 else {"blocks": list(blocks)},
        "task_config": {k: v for k, v in model.get_config().items() if k not in ("encoder", "name", "trainable")},
    }
    if micro_batches > 1:  # (only then, so runs made before the option still resume; batch norm saw the parts)
        hyperparameters["micro_batches"] = micro_batches
    pretraining_data = {"path": str(Path(data).resolve()), "num_samples": int(len(train_idx)),
                        "num_validation_samples": int(len(val_idx)),
                        "in_channels": in_channels, "size": size,
                        "preprocessing": "foreground crop, resize, min-max to [0, 1]" if dims == 3
                        else "resize, scale to [0, 1]"}
    config = dict(hyperparameters, data=pretraining_data["path"], distribution=plan.describe(batch_size))
    if val_fraction:  # (left out at 0, so runs made before the option existed still resume)
        config["val_fraction"] = val_fraction
    # The datasets first: they check the samples fit the task before anything is written.
    dataset = model.dataset(samples, batch_size=plan.global_batch(batch_size), seed=seed, indices=train_idx,
                            workers=workers, shard=plan.shard)
    validation = None
    if len(val_idx):
        val_batch = max(min(plan.global_batch(batch_size), len(val_idx)), least * plan.replicas)
        validation = model.held_out_dataset(samples, batch_size=val_batch, seed=seed + 1, indices=val_idx,
                                            shard=plan.shard)
    out_dir = plan.output_dir(run_dir)
    run = TrainingRun(out_dir, config=config, resume=resume, seed=seed)
    write_resolved_config(ctx, out_dir)  # --config OUT/config.yaml repeats this run
    held_out = f" (+ {len(val_idx)} held out for validation)" if len(val_idx) else ""
    spread = f" x {plan.replicas} replicas ({plan.kind})" if plan.replicas > 1 else ""
    click.echo(f"Pretraining {task} ({dims}D) on {len(train_idx)} samples{held_out} of {size}^{dims} x {in_channels}, "
               f"batch {batch_size}{spread}, lr {learning_rate:g}, {epochs} epochs -> {run_dir}")
    with plan.scope():  # the dataset shuffles by (seed, epoch) itself
        callbacks = tensorboard_callbacks(options.tensorboard_dir(tensorboard, run_dir) if plan.is_chief else None)
        history = run.fit(model, x=dataset, epochs=epochs, verbose=1, shuffle=False, validation_data=validation,
                          callbacks=callbacks)
    out = out_dir / "encoder"
    if remat or micro_batches > 1:  # settings of this run (run.json), not of the preset: it loads without them
        from keras_ssl3d.layers import set_micro_batches, set_remat

        set_remat(model, False)
        set_micro_batches(model, 1)
    saved = model.pretrained_model()
    what = "encoder" if saved is model.encoder else "encoder and decoder (a U-Net preset)"
    saved.save_pretrained(out, metadata={"task": task, "hyperparameters": hyperparameters,
                                         "pretraining_data": pretraining_data})
    if not plan.is_chief:  # another process wrote the run folder
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
        return
    last = history.history if hasattr(history, "history") else {}
    summary = ", ".join(f"{k} {v[-1]:.4f}" for k, v in last.items() if v) if isinstance(last, dict) else ""
    click.echo(f"Saved the pretrained {what} to {out}" + (f" ({summary})" if summary else ""))
