"""Run a zoo preset's recipe on data and register the result (``keras-ssl3d zoo build``).

The recipe (task, hyper-parameters, learning rate, input size) comes from the registry manifest;
the data are the user's (any layout ``keras_ssl3d.data`` understands, or a preprocessed cache).
Training is ``keras_ssl3d.tasks.runner.run_pretrain`` (per-epoch checkpoints, ``--resume``),
and the trained encoder is saved as a preset folder in ``local_build_dir(name)``, where
``from_pretrained(name)`` finds it. The metadata records the recipe and what this build used
(epochs, batch size, input size, number of samples, final losses and metrics).
"""

from pathlib import Path

from keras_ssl3d.errors import ConfigError, DataError
from keras_ssl3d.presets.catalogue import get_entry, home_dir, local_build_dir

DEFAULT_EPOCHS = 100
from keras_ssl3d.names import PRETEXT_BATCH_SIZE as DEFAULT_BATCH_SIZE  # noqa: E402


def recipe_settings(entry, *, epochs, batch_size, input_size, seed=0, encoder_overrides=None, steps_per_epoch=None):
    """The recipe of ``entry`` as `PretrainSettings` (``encoder_overrides`` e.g. tiny ``filters``)."""
    from keras_ssl3d.tasks.runner import PretrainSettings

    arch = entry.manifest["architecture"]
    if arch["class_name"] != {3: "Encoder3D", 2: "Encoder2D"}.get(entry.rank):
        raise ConfigError(f"zoo preset {entry.name!r}: unknown architecture {arch['class_name']!r}")
    recipe = entry.recipe
    return PretrainSettings(task=recipe["task"], dims=entry.rank, size=input_size, epochs=epochs,
                            batch_size=batch_size, lr=float(recipe["learning_rate"]),
                            encoder=dict(arch.get("config", {}), **(encoder_overrides or {})),
                            task_options=dict(recipe.get("task_hparams", {})), seed=seed,
                            steps_per_epoch=steps_per_epoch)


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


def train_preset(entry, samples, *, epochs, batch_size, input_size, run_dir, preset_dir, data_description,
                 resume=False, seed=0, encoder_overrides=None, steps_per_epoch=None, verbose="auto", plan=None,
                 held_out=None, metadata=None):
    """Pretrain the recipe's task on ``samples`` (`run_pretrain`) and save it to ``preset_dir`` with the zoo's
    metadata (the recipe, what this build used, final losses and metrics); return the `PretrainResult`.

    ``plan``: a ``keras_ssl3d.distribute.DistributionPlan``; ``batch_size`` is then per device.
    ``held_out``: samples never trained on, scored every epoch (``val_*`` metrics, one fixed batch of
    all of them); the record then holds ``pretext``, what the task reached next to chance.
    ``metadata``: ``function(result) -> dict`` of more metadata.
    """
    from keras_ssl3d.tasks.runner import run_pretrain

    settings = recipe_settings(entry, epochs=epochs, batch_size=batch_size, input_size=input_size, seed=seed,
                               encoder_overrides=encoder_overrides, steps_per_epoch=steps_per_epoch)

    def zoo_metadata(result):
        record = {"epochs": epochs, "batch_size": batch_size, "input_size": input_size, "samples": int(len(samples)),
                  "seed": seed, "learning_rate": settings.lr, "steps_per_epoch": result.steps_per_epoch}
        if held_out is not None:
            record.update(held_out_samples=int(len(held_out)), pretext=result.pretext)
        found = preset_metadata(entry, record, result.final, data_description)
        return dict(found, **(metadata(result) if metadata else {}))

    return run_pretrain(samples, settings, run_dir, held_out=held_out, plan=plan, resume=resume, verbose=verbose,
                        record={"zoo_name": entry.name, "recipe": entry.recipe,
                                "encoder_overrides": encoder_overrides or {}},
                        metadata=zoo_metadata, preset_dir=preset_dir, input_contract=contract_extra(entry))


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
    entry = get_entry(name)
    recipe = entry.recipe
    epochs = int(epochs or recipe.get("epochs") or DEFAULT_EPOCHS)
    batch_size = int(batch_size or recipe.get("batch_size") or DEFAULT_BATCH_SIZE[entry.rank])
    input_size = int(input_size or recipe["input_size"][0])
    run_dir = Path(run_dir) if run_dir else home_dir() / "runs" / name
    echo(f"building {name}: task {recipe['task']}, {epochs} epochs, batch {batch_size}, input {input_size}, "
         f"run folder {run_dir}")
    samples = load_samples(entry, data_dir, input_size, cache_root=run_dir.parent, echo=echo)
    out = plan.output_dir(local_build_dir(name)) if plan is not None else local_build_dir(name)  # chief writes
    train_preset(entry, samples, epochs=epochs, batch_size=batch_size, input_size=input_size, run_dir=run_dir,
                 preset_dir=out, data_description=f"user data ({Path(data_dir).name})", resume=resume, seed=seed,
                 plan=plan)
    return out


def recipe_options(entry):
    """``entry``'s recipe as ``keras-ssl3d pretrain`` options (a ``--config`` mapping) that train what ``zoo build`` does.

    The data (``data``) and run folder (``out``) are the user's. Architecture settings that ``pretrain`` has
    no option for must be the encoder's defaults, else this is a ConfigError rather than a silent difference.
    """
    import inspect

    from keras_ssl3d.models import Encoder2D, Encoder3D

    arch = entry.manifest["architecture"]
    config = dict(arch.get("config", {}))
    cls = {"Encoder3D": Encoder3D, "Encoder2D": Encoder2D}[arch["class_name"]]
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
