"""``keras-ssl3d finetune``: fine-tune a (pretrained) encoder for segmentation or 2D grading."""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.config_file import config_option, resolved_config
from keras_ssl3d.cli.convergence_options import convergence_options
from keras_ssl3d.cli.distribution import distribution_options
from keras_ssl3d.cli.plan import apply_finetune_budget, memory_budget_option
from keras_ssl3d.cli.resume import resume_option
from keras_ssl3d.cli.streaming import cache_option, workers_option
from keras_ssl3d.cli.transfer_options import transfer_options
from keras_ssl3d.finetune.parsing import parse_int_list
from keras_ssl3d.names import FINETUNE_STRATEGIES, NORMALIZATIONS


@click.command("finetune")
@config_option
@click.option("--data", "data_path", default=None, type=click.Path(), help="Labelled data: a BraTS/MSD/folder/csv "
              "data set or a preprocessed cache (3D segmentation), or an image folder with grades (2D).")
@click.option("--encoder", default=None, help="Pretrained encoder: preset folder, .keras file, run folder of "
              "`keras-ssl3d pretrain`, zoo name or hub repo; `none` trains from scratch. A U-Net preset (Genesis, "
              "MAE pretraining) also starts the decoder.")
@click.option("--out", default=None, type=click.Path(), help="Run folder (model/, history.csv, run.json).")
@click.option("--label-fraction", default=1.0, show_default=True, type=options.LABEL_FRACTION,
              help="Fraction of the training subjects whose labels are used (chosen by --seed).")
@click.option("--strategy", default="warmup", show_default=True, type=click.Choice(FINETUNE_STRATEGIES),
              help="Encoder training: frozen throughout, frozen for --warmup-epochs then trained, or trained.")
@click.option("--warmup-epochs", default=None, type=options.WARMUP_EPOCHS, help="Warm-up epochs [paper: 25 for 3D, 5 for 2D].")
@click.option("--epochs", "--max-epochs", "epochs", default=100, show_default=True, type=options.EPOCHS,
              help="Epochs (the maximum with --patience).")
@convergence_options
@transfer_options
@click.option("--batch-size", default=2, show_default=True, type=options.BATCH_SIZE)
@click.option("--lr", default=None, type=options.LEARNING_RATE, help="Adam learning rate [paper: 1e-5 for 3D, 5e-5 for 2D].")
@click.option("--seed", default=0, show_default=True, type=options.SEED, help="Seed of the label subset, order and init.")
@click.option("--split-seed", default=0, show_default=True, type=options.SEED, help="Seed of the validation split.")
@click.option("--size", default=None, type=options.SIZE, help="Input size (cube side / image side) [128 3D, 224 2D].")
@click.option("--filters", default=None, help="With --encoder none: encoder widths, e.g. 32,64,128,256,512 "
              "(2D: layers per dense block).")
@click.option("--norm", default="batch", show_default=True, type=click.Choice(NORMALIZATIONS),
              help="With --encoder none: normalisation of the 3D encoder.")
@click.option("--val-fraction", default=0.2, show_default=True, type=options.VAL_FRACTION,
              help="Fraction of subjects held out for validation (fixed by --split-seed).")
@click.option("--loss", default="dice_ce", show_default=True, type=click.Choice(["dice_ce", "dice", "ce"]),
              help="Segmentation loss.")
@click.option("--adapt", default="auto", show_default=True,
              type=click.Choice(["auto", "duplicate", "mean", "random", "by_name"]),
              help="Input-channel adaptation when the encoder was pretrained on other channels "
                   "(auto: by_name when channel names match, else duplicate).")
@cache_option
@workers_option
@distribution_options
@options.memory_options("encoder and decoder")
@memory_budget_option
@options.tensorboard_option
@options.augment_option
@options.checkpoint_options
@resume_option
@click.option("--verbose", default=2, show_default=True, type=options.FIT_VERBOSITY, help="Keras fit verbosity.")
@click.pass_context
def finetune(ctx, data_path, encoder, out, label_fraction, strategy, warmup_epochs, epochs, patience, min_epochs,
             lr_schedule,
             steps_per_epoch, encoder_lr_scale, lr_warmup_epochs, decoder, warmup_freezes, batch_size, lr, seed,
             split_seed, size, filters, norm, val_fraction, loss, adapt, cache, workers, distribute_strategy, devices,
             remat, precision, memory_budget, tensorboard, augment, checkpoint_every, checkpoint_seconds, resume,
             verbose):
    """Fine-tune ENCODER on labelled data: U-Net segmentation (3D) or grading (2D).

    Writes OUT/model (a preset with the task metadata), OUT/history.csv, OUT/run.json and
    OUT/result.json; evaluate with `keras-ssl3d evaluate --model OUT --data DIR`.
    """
    import sys
    from pathlib import Path

    from keras_ssl3d.cli.resume import FLAG, rerun_recorded, resolve_resume

    if resume not in (None, FLAG) and (data_path is None or encoder is None):
        return rerun_recorded(ctx, resume, "finetune")
    out, resume = resolve_resume(resume, out)
    for option, value in (("--data", data_path), ("--encoder", encoder)):
        if value is None:
            raise click.UsageError(f"Missing option '{option}'.")
    from keras_ssl3d import distribute
    from keras_ssl3d.cli.runtime import check_size
    from keras_ssl3d.data.labelled import detect_task, load_task_data
    from keras_ssl3d.finetune.runner import FinetuneSettings, run_finetune
    from keras_ssl3d.training.run import check_run_dir

    settings = FinetuneSettings(
        encoder=encoder, label_fraction=label_fraction, strategy=strategy, warmup_epochs=warmup_epochs,
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, split_seed=split_seed, val_fraction=val_fraction,
        filters=parse_int_list(filters, "--filters"), norm=norm, loss=loss, adapt=adapt, remat=remat,
        precision=precision, checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
        augment=augment, patience=patience, lr_schedule=lr_schedule, steps_per_epoch=steps_per_epoch,
        encoder_lr_scale=encoder_lr_scale, lr_warmup_epochs=lr_warmup_epochs, decoder=decoder, min_epochs=min_epochs,
        warmup_freezes=warmup_freezes)
    settings.check()
    from keras_ssl3d.finetune.optimizer import scale_note

    if scale_note(encoder, encoder_lr_scale):  # scratch: the scale has no pretrained encoder to apply to
        click.echo(scale_note(encoder, encoder_lr_scale))
    if detect_task(data_path) == "segmentation":  # 3D: refuse a --filters/--size typo before reading any data
        check_size(settings.filters if str(encoder).lower() == "none" else None, size or 128, batch_size)
    check_run_dir(out)
    plan = distribute.plan(distribute_strategy, devices)
    data = load_task_data(data_path, size=size, cache_dir=cache, cache_root=Path(out).parent, workers=workers,
                          echo=click.echo)
    settings.remat = apply_finetune_budget(memory_budget, data, settings, click.echo)
    result = run_finetune(data, settings, out, resume=resume, verbose=verbose, command=sys.argv, workers=workers,
                          plan=plan, log=click.echo, config_text=resolved_config(ctx),
                          tensorboard=options.tensorboard_dir(tensorboard, out))
    score = result["selected_score"]
    shown = "n/a" if score is None else f"{score:.4f}"
    click.echo(f"{data.task}: {result['train_size']} training / {result['val_size']} validation subjects; "
               f"{result['monitor']} = {shown} at epoch {result['selected_epoch']} of {len(result['curve'])} "
               f"({result['selection']}); that epoch's model saved to {out}/model")
    from keras_ssl3d.finetune.convergence import ending_line

    if ending_line(result):  # with --patience: converged, or stopped at --epochs
        click.echo(ending_line(result))
