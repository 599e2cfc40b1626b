"""Run a zoo preset's recipe on data and register the result (``keras-ssl3d zoo build``).

The recipe (task, hyper-parameters, learning rate, input size) comes from the registry manifest;
the data are the user's (any layout ``keras_ssl3d.data`` understands, or a preprocessed cache).
Training goes through ``keras_ssl3d.training.TrainingRun`` (per-epoch checkpoints, ``--resume``),
and the trained encoder is saved as a preset folder in ``local_build_dir(name)``, where
``from_pretrained(name)`` finds it. The metadata records the recipe and what this build used
(epochs, batch size, input size, number of samples, final losses and metrics).
"""

from pathlib import Path

from keras_ssl3d.errors import ConfigError, DataError
from keras_ssl3d.zoo.registry import get_entry, home_dir, local_build_dir

DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = {3: 2, 2: 16}


def make_encoder(entry, **overrides):
    """A fresh encoder with the manifest's architecture (``overrides`` e.g. tiny ``filters``)."""
    import keras_ssl3d

    arch = entry.manifest["architecture"]
    cls = {"Encoder3D": keras_ssl3d.Encoder3D, "Encoder2D": keras_ssl3d.Encoder2D}.get(arch["class_name"])
    if cls is None:
        raise ConfigError(f"zoo preset {entry.name!r}: unknown architecture {arch['class_name']!r}")
    config = dict(arch.get("config", {}))
    config.update(overrides)
    return cls(**config)


def make_task(entry, encoder, input_size):
    """The recipe's pretext task around ``encoder`` (hyper-parameters from the manifest)."""
    from keras_ssl3d.tasks import TASKS, make_task

    recipe = entry.recipe
    name = recipe["task"]
    if name not in TASKS:
        raise ConfigError(f"zoo preset {entry.name!r}: unknown task {name!r}")
    return make_task(name, encoder, input_size=input_size, **recipe.get("task_hparams", {}))


def load_samples(entry, data_dir, input_size, cache_root=None, echo=None):
    """The unlabeled training samples of ``data_dir``, preprocessed as the recipe says (streamed in 3D)."""
    from keras_ssl3d.data import open_unlabeled

    samples = open_unlabeled(data_dir, input_size, rank=entry.rank, cache_root=cache_root, echo=echo)
    expected = int(entry.input_contract["in_channels"])
    if samples.num_channels != expected:
        raise DataError(
            f"zoo preset {entry.name!r} expects {expected} channels ({', '.join(entry.channel_names)}) but the data "
            f"have {samples.num_channels}", path=data_dir)
    return samples


def train_preset(entry, samples, *, epochs, batch_size, input_size, run_dir, resume=False, seed=0,
                 encoder_overrides=None, steps_per_epoch=None, verbose="auto", plan=None, held_out=None):
    """Pretrain the recipe's task on ``samples``; return ``(preset model, training record, final metrics)``.

    The preset model is the encoder, or the whole U-Net for tasks that pretrain a decoder too.
    ``plan``: a ``keras_ssl3d.distribute.DistributionPlan``; ``batch_size`` is then per device.
    ``held_out``: samples never trained on, scored every epoch (``val_*`` metrics, one fixed batch of
    all of them); the record then holds ``pretext``, what the task reached next to chance
    (``keras_ssl3d.tasks.base.pretext_summary``).
    """
    import keras

    from keras_ssl3d.distribute import DistributionPlan
    from keras_ssl3d.training import TrainingRun

    plan = plan or DistributionPlan("none", [])
    keras.utils.set_random_seed(seed)
    with plan.scope():
        encoder = make_encoder(entry, **(encoder_overrides or {}))
        task = make_task(entry, encoder, input_size)
        task.compile(learning_rate=float(entry.recipe["learning_rate"]))
    if len(samples) < plan.global_batch(batch_size):
        raise DataError(f"{len(samples)} samples are fewer than one batch of {plan.global_batch(batch_size)}")
    dataset = task.dataset(samples, batch_size=plan.global_batch(batch_size), seed=seed)
    config = {"zoo_name": entry.name, "recipe": entry.recipe, "epochs": epochs, "batch_size": batch_size,
              "input_size": input_size, "samples": int(len(samples)), "seed": seed,
              "encoder_overrides": encoder_overrides or {}, "distribution": plan.describe(batch_size)}
    run = TrainingRun(plan.output_dir(run_dir), config=config, resume=resume, seed=seed)
    fit_kwargs = {"verbose": verbose}
    val_batch = None
    if held_out is not None:
        val_batch = max(len(held_out), getattr(task, "min_batch_size", 1))
        fit_kwargs["validation_data"] = task.held_out_dataset(held_out, batch_size=val_batch, seed=seed + 1)
    if steps_per_epoch:
        fit_kwargs["steps_per_epoch"] = int(steps_per_epoch)
    with plan.scope():
        history = run.fit(task, x=dataset, epochs=epochs, **fit_kwargs)
    final = {k: float(v[-1]) for k, v in getattr(history, "history", {}).items() if v and v[-1] is not None}
    record = {"epochs": epochs, "batch_size": batch_size, "input_size": input_size, "samples": int(len(samples)),
              "seed": seed, "learning_rate": float(entry.recipe["learning_rate"]),
              "steps_per_epoch": steps_per_epoch or len(dataset)}
    if held_out is not None:
        from keras_ssl3d.tasks.base import pretext_summary

        record.update(held_out_samples=int(len(held_out)),
                      pretext=pretext_summary(list(getattr(history, "rows", [])), task.chance_loss,
                                              task.chance_accuracy(val_batch)))
    return task.pretrained_model(), record, final


def preset_metadata(entry, record, final_metrics, data_description):
    return {
        "zoo_name": entry.name,
        "zoo_version": entry.version,
        "task": entry.recipe["task"],
        "recipe": entry.recipe,
        "training": dict(record, data=data_description),
        "metrics": {f"pretext_{k}": v for k, v in final_metrics.items()},
        "datasets": entry.manifest["card"].get("datasets"),
        "license": entry.manifest["card"].get("license"),
        "license_name": entry.manifest["card"].get("license_name"),
    }


def contract_extra(entry):
    keep = ("modality", "orientation", "intensity_normalization", "layout", "input_size")
    return {k: entry.input_contract[k] for k in keep if k in entry.input_contract}


def build_preset(name, data_dir, *, epochs=None, batch_size=None, input_size=None, run_dir=None, resume=False,
                 seed=0, echo=print, plan=None):
    """Run ``name``'s recipe on ``data_dir``; save the encoder to ``local_build_dir(name)``; return it."""
    from keras_ssl3d.presets.io import save_preset

    entry = get_entry(name)
    recipe = entry.recipe
    epochs = int(epochs or recipe.get("epochs") or DEFAULT_EPOCHS)
    batch_size = int(batch_size or recipe.get("batch_size") or DEFAULT_BATCH_SIZE[entry.rank])
    input_size = int(input_size or recipe["input_size"][0])
    run_dir = Path(run_dir) if run_dir else home_dir() / "runs" / name
    echo(f"building {name}: task {recipe['task']}, {epochs} epochs, batch {batch_size}, input {input_size}, "
         f"run folder {run_dir}")
    samples = load_samples(entry, data_dir, input_size, cache_root=run_dir.parent, echo=echo)
    encoder, record, final = train_preset(entry, samples, epochs=epochs, batch_size=batch_size,
                                          input_size=input_size, run_dir=run_dir, resume=resume, seed=seed,
                                          plan=plan)
    out = plan.output_dir(local_build_dir(name)) if plan is not None else local_build_dir(name)  # chief writes
    save_preset(encoder, out, metadata=preset_metadata(entry, record, final, f"user data ({Path(data_dir).name})"),
                input_contract_extra=contract_extra(entry))
    return out


def recipe_options(entry):
    """``entry``'s recipe as ``keras-ssl3d pretrain`` options (a ``--config`` mapping) that train what ``zoo build`` does.

    The data (``data``) and run folder (``out``) are the user's. Architecture settings that ``pretrain`` has
    no option for must be the encoder's defaults, else this is a ConfigError rather than a silent difference.
    """
    import inspect

    import keras_ssl3d

    arch = entry.manifest["architecture"]
    config = dict(arch.get("config", {}))
    cls = {"Encoder3D": keras_ssl3d.Encoder3D, "Encoder2D": keras_ssl3d.Encoder2D}[arch["class_name"]]
    shown = ("filters", "norm") if entry.rank == 3 else ("blocks",)
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    for key, value in config.items():
        if key in shown or key in ("in_channels", "channel_names"):  # channels come from the data
            continue
        default = defaults.get(key, inspect.Parameter.empty)
        if value != (list(default) if isinstance(default, tuple) else default):
            raise ConfigError(f"zoo preset {entry.name!r}: {key}={value!r} has no pretrain option")
    recipe = entry.recipe
    options = {
        "task": recipe["task"],
        "dims": str(entry.rank),
        "size": int(recipe["input_size"][0]),
        "epochs": int(recipe.get("epochs") or DEFAULT_EPOCHS),
        "batch_size": int(recipe.get("batch_size") or DEFAULT_BATCH_SIZE[entry.rank]),
        "lr": float(recipe["learning_rate"]),
        "seed": 0,
        "task_option": dict(recipe.get("task_hparams", {})),
    }
    if entry.rank == 3:
        options["filters"] = ",".join(str(f) for f in config.get("filters", defaults["filters"]))
        options["norm"] = config.get("norm", defaults["norm"])
    else:
        options["blocks"] = ",".join(str(b) for b in config.get("blocks", defaults["blocks"]))
    return options
