"""``keras-ssl3d pretrain``: train an encoder with one of the five pretext tasks, resumably."""

from pathlib import Path

import click

from keras_ssl3d.cli.resume import FLAG, rerun_recorded, resolve_resume, resume_option
from keras_ssl3d.errors import ConfigError, DataError
from keras_ssl3d.finetune.parsing import parse_int_list
from keras_ssl3d.training.precision import PRECISIONS

TASK_NAMES = ("cpc", "rpl", "jigsaw", "rotation", "exemplar")
PATCH_TASKS = ("cpc", "rpl", "jigsaw")


def _load_samples(data, dims, size):
    if dims == 3:
        from keras_ssl3d.data import load_unlabeled_volumes

        return load_unlabeled_volumes(data, size=size, crop_foreground=True)
    from keras_ssl3d.data import load_images_2d

    return load_images_2d(data, size=size)[0]


def build_task(task, dims, in_channels, size, filters=None, blocks=None, norm="batch", remat=False):
    """The encoder and task model the CLI trains (also used by the benchmarks)."""
    from keras_ssl3d.models import Encoder2D, Encoder3D
    from keras_ssl3d.tasks import TASKS

    if dims == 3:
        encoder = Encoder3D(in_channels=in_channels, filters=filters or (32, 64, 128, 256, 512), norm=norm,
                            remat=remat)
    else:
        encoder = Encoder2D(in_channels=in_channels, blocks=blocks or (6, 12, 24, 16))
    kwargs = {"input_size": size} if task in PATCH_TASKS else {}
    try:
        return TASKS[task](encoder, **kwargs)
    except ValueError as e:  # e.g. a patch grid that does not fit the input size
        raise ConfigError(f"{task} cannot be built for --size {size}: {e}") from None


@click.command("pretrain")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="The self-supervised task (required unless --resume RUN_DIR).")
@click.option("--dims", type=click.Choice(["2", "3"]), default="3", show_default=True,
              help="3: NIfTI volumes and Encoder3D; 2: PNG/JPEG images and Encoder2D (DenseNet).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Folder of NIfTI volumes (or a preprocessed cache); 2D: folder of images.")
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder: checkpoints, run.json, history.csv and the final encoder/.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per batch [default: 2 in 3D, 16 in 2D].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate [default: the paper's 1e-3 in 3D, 5e-4 in 2D].")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Inputs are resized to size^3 (3D) or size^2 (2D) [default: 128 / 224].")
@click.option("--filters", default="32,64,128,256,512", show_default=True,
              help="3D encoder widths per level, comma-separated.")
@click.option("--blocks", default="6,12,24,16", show_default=True,
              help="2D encoder (DenseNet) layers per dense block, comma-separated.")
@click.option("--norm", type=click.Choice(["batch", "group", "instance", "none"]), default="batch",
              show_default=True, help="3D encoder normalization.")
@click.option("--remat", is_flag=True, default=False,
              help="3D: rematerialise the encoder's residual blocks (gradient checkpointing): same results, "
                   "less activation memory, slower steps (see README, Performance).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="Keras dtype policy; the mixed ones are for GPUs/TPUs (emulated and slower on most CPUs).")
@click.option("--seed", type=int, default=0, show_default=True)
@resume_option
@click.pass_context
def pretrain(ctx, task, dims, data, run_dir, epochs, batch_size, lr, size, filters, blocks, norm, remat, precision,
             seed, resume):
    """Pretrain an encoder with a self-supervised task; writes OUT/encoder/ (a preset folder)."""
    if resume not in (None, FLAG) and (task is None or data is None):
        return rerun_recorded(ctx, resume, "pretrain")
    run_dir, resume = resolve_resume(resume, run_dir)
    run_dir = Path(run_dir)
    for option, value in (("--task", task), ("--data", data)):
        if value is None:
            raise click.UsageError(f"Missing option '{option}'.")
    import keras

    from keras_ssl3d.tasks.base import DEFAULT_INPUT_SIZE, DEFAULT_LEARNING_RATE
    from keras_ssl3d.training import TrainingRun
    from keras_ssl3d.training.precision import precision_policy

    dims = int(dims)
    if remat and dims != 3:
        raise ConfigError("--remat applies to the 3D encoder (--dims 3)")
    size = int(size or DEFAULT_INPUT_SIZE[dims])
    batch_size = int(batch_size or (2 if dims == 3 else 16))
    filters = parse_int_list(filters, "--filters") if dims == 3 else None
    blocks = parse_int_list(blocks, "--blocks") if dims == 2 else None
    learning_rate = float(lr or DEFAULT_LEARNING_RATE[dims])

    keras.utils.set_random_seed(seed)
    samples = _load_samples(data, dims, size)
    if len(samples) == 0:
        raise DataError("no volumes found" if dims == 3 else "no images found", path=data)
    if task == "exemplar" and len(samples) < 2:
        raise DataError("exemplar needs at least 2 samples (negatives are other samples)", path=data)
    batch_size = min(batch_size, len(samples))
    if task == "exemplar":
        batch_size = max(batch_size, 2)
    in_channels = int(samples.shape[-1])

    with precision_policy(precision):
        model = build_task(task, dims, in_channels, size, filters=filters, blocks=blocks, norm=norm, remat=remat)
    model.compile(learning_rate=learning_rate)
    hyperparameters = {
        "task": task, "dims": dims, "size": size, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "optimizer": "adam", "seed": seed, "precision": precision, "remat": remat,
        "encoder": {"filters": list(filters), "norm": norm} if dims == 3 else {"blocks": list(blocks)},
        "task_config": {k: v for k, v in model.get_config().items() if k not in ("encoder", "name", "trainable")},
    }
    pretraining_data = {"path": str(Path(data).resolve()), "num_samples": int(len(samples)),
                        "in_channels": in_channels, "size": size,
                        "preprocessing": "foreground crop, resize, min-max to [0, 1]" if dims == 3
                        else "resize, scale to [0, 1]"}
    config = dict(hyperparameters, data=pretraining_data["path"])
    run = TrainingRun(run_dir, config=config, resume=resume, seed=seed)
    dataset = model.dataset(samples, batch_size=batch_size, seed=seed)
    click.echo(f"Pretraining {task} ({dims}D) on {len(samples)} samples of {size}^{dims} x {in_channels}, "
               f"batch {batch_size}, lr {learning_rate:g}, {epochs} epochs -> {run_dir}")
    history = run.fit(model, x=dataset, epochs=epochs, verbose=1, shuffle=False)  # the dataset shuffles by (seed, epoch)
    out = Path(run_dir) / "encoder"
    if remat:  # a setting of this run (run.json), not of the preset: it loads without remat
        from keras_ssl3d.layers import set_remat

        set_remat(model.encoder, False)
    model.encoder.save_pretrained(out, metadata={"task": task, "hyperparameters": hyperparameters,
                                                 "pretraining_data": pretraining_data})
    last = history.history if hasattr(history, "history") else {}
    summary = ", ".join(f"{k} {v[-1]:.4f}" for k, v in last.items() if v) if isinstance(last, dict) else ""
    click.echo(f"Saved the pretrained encoder to {out}" + (f" ({summary})" if summary else ""))
