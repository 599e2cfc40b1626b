"""``keras-ssl3d plan`` and ``--memory-budget``: the memory planner on the command line.

``plan`` prints the estimate of a pretraining step without building anything; ``--memory-budget``
on ``pretrain`` picks ``--remat`` / ``--micro-batches`` so that the step fits (see
``keras_ssl3d.tasks.memory_plan``).
"""

import click

from keras_ssl3d.cli import options
from keras_ssl3d.names import NORMALIZATIONS, TASK_NAMES

BUDGET_HELP = ("3D: the memory one step may use, e.g. 8GB, or auto (a GPU's free memory, else 80 % of the host's "
               "available memory). Turns on --remat (pretrain: and/or --micro-batches) as far as needed for the "
               "planner's estimate to fit (one line says which), or stops in one line when nothing fits.")


def _check_budget(ctx, param, value):
    """Refuse a malformed ``--memory-budget`` at once, before any data is read (one line, exit 2)."""
    if value is not None and str(value).strip().lower() != "auto":
        from keras_ssl3d.cli.runtime import start_keras

        start_keras(bool(ctx.find_root().params.get("verbose")))  # the planner's package imports Keras: quietly
        from keras_ssl3d.tasks.memory_plan import parse_size

        parse_size(value)
    return value


def memory_budget_option(func):
    """``--memory-budget auto|SIZE`` for a training command."""
    return click.option("--memory-budget", "memory_budget", default=None, metavar="auto|SIZE", help=BUDGET_HELP,
                        callback=_check_budget)(func)


def apply_memory_budget(budget, task, size, batch_size, filters, in_channels, norm, precision, remat, micro_batches,
                        task_options=None, echo=click.echo):
    """``(remat, micro_batches)`` to train with: unchanged without a budget, else the planner's choice
    (never weaker than what was asked for), said in one line. A ``ConfigError`` when nothing fits."""
    if budget is None:
        return remat, micro_batches
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.base import RestorationTask
    from keras_ssl3d.tasks.memory_plan import choose

    chosen, line = choose(budget, task, size, batch_size, filters=filters, in_channels=in_channels, norm=norm,
                          precision=precision, remat=remat, micro_batches=micro_batches, task_options=task_options,
                          micro_allowed=not issubclass(TASKS[task], RestorationTask))
    echo(line)
    return chosen.remat, chosen.micro_batches


def _encoder_filters(handle, given):
    """``(widths, where from)`` of the encoder ``finetune --encoder`` starts from, read from a local
    preset's (or run's) config.json without loading it; the default widths when it cannot be read."""
    import json
    from pathlib import Path

    from keras_ssl3d.tasks.memory_plan import DEFAULT_FILTERS

    if str(handle) == "none":
        return tuple(given or DEFAULT_FILTERS), "--filters"

    def find(node):
        if isinstance(node, dict):
            config = node.get("config")
            if node.get("class_name") == "Encoder3D" and isinstance(config, dict) and "filters" in config:
                return config["filters"]
            return next((f for f in map(find, node.values()) if f is not None), None)
        if isinstance(node, list):
            return next((f for f in map(find, node) if f is not None), None)
        return None

    root = Path(str(handle)).expanduser()
    for config in (root / "config.json", root / "encoder" / "config.json", root / "model" / "config.json"):
        try:
            filters = find(json.loads(config.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        if filters:
            return tuple(int(f) for f in filters), str(config)
    return DEFAULT_FILTERS, f"assumed {','.join(map(str, DEFAULT_FILTERS))}: not read from {handle}"


def apply_finetune_budget(budget, data, settings, echo=click.echo):
    """``--remat`` for ``finetune --memory-budget``: on when the U-Net's step needs it to fit (one line
    says so); a ``ConfigError`` when even that does not fit. Unchanged without a budget."""
    if budget is None:
        return settings.remat
    from keras_ssl3d.errors import ConfigError
    from keras_ssl3d.tasks.memory_plan import SEGMENTATION, choose

    if data.task != "segmentation":
        raise ConfigError("--memory-budget applies to 3D segmentation (the 3D encoder and U-Net decoder)")
    filters, source = _encoder_filters(settings.encoder, settings.filters)
    chosen, line = choose(budget, SEGMENTATION, data.size, settings.batch_size, filters=filters,
                          in_channels=len(data.channel_names), norm=settings.norm or "batch",
                          precision=settings.precision, remat=settings.remat, micro_allowed=False,
                          num_classes=data.num_classes)
    echo(f"{line}; encoder widths {','.join(map(str, filters))} ({source})")
    return chosen.remat


@click.command("plan")
@click.option("--task", type=click.Choice(TASK_NAMES), required=True, help="The 3D pretext task.")
@click.option("--size", type=options.SIZE, default=128, show_default=True, help="Inputs are size^3.")
@click.option("--batch-size", type=options.BATCH_SIZE, default=2, show_default=True)
@click.option("--in-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Channels (modalities) of the volumes.")
@click.option("--filters", default="32,64,128,256,512", show_default=True,
              help="3D encoder widths per level, comma-separated.")
@click.option("--norm", type=click.Choice(NORMALIZATIONS), default="batch",
              show_default=True)
@click.option("--precision", type=click.Choice(options.PRECISIONS), default="float32", show_default=True)
@click.option("--remat", is_flag=True, default=False, help="Estimate with rematerialised residual blocks.")
@click.option("--micro-batches", type=options.MICRO_BATCHES, default=1, show_default=True)
@click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE",
              help="A constructor argument of the task (as for pretrain), e.g. --task-option grid=3.")
@memory_budget_option
def plan(task, size, batch_size, in_channels, filters, norm, precision, remat, micro_batches, task_option,
         memory_budget):
    """Estimate parameters and peak memory of a 3D pretraining step, without training.

    With --memory-budget, also say which --remat / --micro-batches make it fit.
    """
    from keras_ssl3d.cli.task_options import parse_task_options
    from keras_ssl3d.finetune.parsing import parse_int_list
    from keras_ssl3d.tasks import TASKS
    from keras_ssl3d.tasks.memory_plan import estimate

    filters = parse_int_list(filters, "--filters")
    task_options = parse_task_options(task_option, task, TASKS[task])
    e = estimate(task, size, batch_size, filters=filters, in_channels=in_channels, norm=norm, precision=precision,
                 remat=remat, micro_batches=micro_batches, task_options=task_options)
    click.echo(e.describe())
    apply_memory_budget(memory_budget, task, size, batch_size, filters, in_channels, norm, precision, remat,
                        micro_batches, task_options)
