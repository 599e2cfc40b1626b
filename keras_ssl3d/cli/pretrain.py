"""``keras-ssl3d pretrain``: train an encoder with one of the pretext tasks, resumably."""

import dataclasses
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
from keras_ssl3d.errors import DataError
from keras_ssl3d.finetune.parsing import parse_int_list
from keras_ssl3d.names import NORMALIZATIONS, TASK_NAMES


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
@click.option("--norm", type=click.Choice(NORMALIZATIONS), default="batch",
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
    from keras_ssl3d import distribute
    from keras_ssl3d.data import open_unlabeled
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.runner import PretrainSettings, run_pretrain
    from keras_ssl3d.training.run import check_run_dir
    from keras_ssl3d.training.tensorboard import tensorboard_callbacks

    dims = int(dims)
    encoder = ({"filters": parse_int_list(filters, "--filters"), "norm": norm} if dims == 3
               else {"blocks": parse_int_list(blocks, "--blocks")})
    settings = PretrainSettings(task=task, dims=dims, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
                                encoder=encoder, task_options=parse_task_options(task_option, task, TASKS[task]),
                                val_fraction=val_fraction, seed=seed, precision=precision, remat=remat,
                                micro_batches=micro_batches)
    settings.check()
    resolved = settings.resolved()
    if dims == 3:  # before any data is read: a typo in --filters/--size is refused in words, not by an OOM
        check_size(resolved.encoder["filters"], resolved.size, max(1, resolved.batch_size // micro_batches))
    check_run_dir(run_dir)
    plan = distribute.plan(distribute_strategy, devices)
    samples = open_unlabeled(data, settings.resolved().size, rank=dims, cache_dir=cache, cache_root=run_dir.parent,
                             workers=workers, echo=click.echo)
    if len(samples) == 0:
        raise DataError("no volumes found" if dims == 3 else "no images found", path=data)
    if dims == 3:  # --memory-budget: the planner turns on --remat / --micro-batches as far as needed
        remat, micro_batches = apply_memory_budget(
            memory_budget, task, resolved.size, resolved.batch_size, resolved.encoder["filters"],
            int(samples.num_channels), resolved.encoder["norm"], precision, remat, micro_batches, settings.task_options)
        settings = dataclasses.replace(settings, remat=remat, micro_batches=micro_batches)
    callbacks = tensorboard_callbacks(options.tensorboard_dir(tensorboard, run_dir) if plan.is_chief else None)
    run_pretrain(samples, settings, run_dir, plan=plan, resume=resume, data_path=data, callbacks=callbacks,
                 on_start=lambda out_dir: write_resolved_config(ctx, out_dir),  # --config OUT/config.yaml repeats it
                 verbose=1, echo=click.echo, workers=workers)
