"""Fine-tuning runs: data split, label subset, model assembly, training and saving.

Shared by ``keras-ssl3d finetune`` and ``keras-ssl3d study``. A run directory holds
``run.json`` / ``history.csv`` / ``checkpoints/`` (from `TrainingRun`) and, once training is
done, ``model/`` (a preset folder whose metadata records the encoder source, label fraction,
strategy, class names, label mapping and input size) and ``result.json``.

Label subsets are chosen by seed, never by file order: the subjects left after the validation
split are permuted with ``seed`` and the first ``ceil(fraction * n)`` are used, so subsets are
identical for every encoder, and nested (5 % is inside 10 %) for one seed. A study first holds out
``test_fraction`` of the subjects (by ``split_seed`` only) that no run trains or selects on.

With a validation set, ``model/`` holds the epoch with the best validation score (``select="best"``,
see `keras_ssl3d.finetune.selection`); without one, or with ``select="last"``, the last epoch.
"""

import dataclasses

import numpy as np

from keras_ssl3d.data.splits import label_subset, split_indices, split_test
from keras_ssl3d.errors import ConfigError

from keras_ssl3d.finetune.model import MODEL_DIR, build_model
from keras_ssl3d.finetune.warmup import default_warmup, warmup_note
from keras_ssl3d.names import FINETUNE_LEARNING_RATE as PAPER_LR

RESULT_FILE = "result.json"
SELECT_RULES = ("best", "last")


@dataclasses.dataclass
class FinetuneSettings:
    encoder: str = "none"
    label_fraction: float = 1.0
    strategy: str = "warmup"
    warmup_epochs: int | None = None
    epochs: int = 100
    batch_size: int = 2
    lr: float | None = None
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    filters: tuple | None = None
    norm: str = "batch"
    loss: str = "dice_ce"
    adapt: str = "auto"
    remat: bool = False
    precision: str = "float32"
    # Checkpoint spacing (see TrainingRun): at least this many epochs and seconds apart; the last
    # epoch and Ctrl-C always save. On small data a checkpoint can cost a fifth of an epoch.
    checkpoint_every: int = 1
    checkpoint_seconds: float = 0.0
    augment: str = "none"  # training batches only: "flip" or "flip_intensity" (see finetune.augment)
    # "best": model/ is the best validation epoch; "last": the last epoch (what runs did before)
    select: str = "best"
    test_fraction: float = 0.0  # held-out test subjects (a study's); 0: none, as `finetune` does
    # convergence (see finetune.convergence): stop after this many epochs without improvement; lr schedule
    patience: int | None = None
    lr_schedule: str = "constant"
    # nnU-Net's fixed iterations per epoch: the labelled subjects are passed over (shuffled) as many whole times
    # as give about this many steps. None: one pass. A few labels otherwise make epochs of one or two steps,
    # each paying Keras' end-of-epoch bookkeeping and a validation pass, and patience counts in those.
    steps_per_epoch: int | None = None
    min_epochs: int = 0  # with patience: the first epochs never count as "without improvement" (convergence)
    # fine-tuning a pretrained encoder: its lr is lr x encoder_lr_scale (finetune.optimizer; 1 for scratch), the
    # lr rises linearly over lr_warmup_epochs (finetune.convergence.epoch_lr), decoder "fresh" ignores a U-Net
    # preset's pretrained decoder (names.FINETUNE_DECODERS); the warm-up freezes the encoder or, with
    # "pretrained", a preset's pretrained decoder too (finetune.warmup)
    encoder_lr_scale: float = 1.0
    lr_warmup_epochs: int = 0
    decoder: str = "auto"
    warmup_freezes: str = "encoder"

    def resolved(self, task):
        out = dataclasses.replace(self)
        if out.lr is None:
            out.lr = PAPER_LR[task]
        if out.warmup_epochs is None:
            out.warmup_epochs = default_warmup(task, out.strategy, out.epochs)
        if out.filters is not None:
            out.filters = tuple(int(f) for f in out.filters)
        return out

    def check(self):
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if self.strategy == "warmup" and self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs} is not less than --epochs {self.epochs}: the "
                              "pretrained encoder would stay frozen for the whole run; use fewer warm-up epochs, "
                              "more epochs, or --strategy frozen")
        from keras_ssl3d.finetune.warmup import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.filters is not None and (not self.filters or min(self.filters) < 1):
            raise ConfigError(f"--filters must be positive integers, got {self.filters}")
        from keras_ssl3d.training.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if not self.checkpoint_seconds >= 0:
            raise ConfigError(f"--checkpoint-seconds must be >= 0, got {self.checkpoint_seconds}")
        from keras_ssl3d.finetune.augment import AUGMENTATIONS

        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"--augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.select not in SELECT_RULES:
            raise ConfigError(f"model selection must be one of {SELECT_RULES}, got {self.select!r}")
        if not 0.0 <= float(self.test_fraction) < 1.0:
            raise ConfigError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.steps_per_epoch is not None and (int(self.steps_per_epoch) != self.steps_per_epoch
                                                 or self.steps_per_epoch < 1):
            raise ConfigError(f"--steps-per-epoch must be an integer >= 1, got {self.steps_per_epoch}")
        from keras_ssl3d.finetune.convergence import check_settings
        from keras_ssl3d.names import FINETUNE_DECODERS as DECODERS
        from keras_ssl3d.finetune.optimizer import check_scale

        check_settings(self.patience, self.lr_schedule, self.val_fraction, self.lr_warmup_epochs, self.epochs,
                       self.min_epochs)
        check_scale(self.encoder_lr_scale)
        if self.decoder not in DECODERS:
            raise ConfigError(f"--decoder must be one of {DECODERS}, got {self.decoder!r}")
        from keras_ssl3d.finetune.warmup import check_warmup_freezes

        check_warmup_freezes(self.warmup_freezes)


def run_finetune(data, settings, out, resume=False, verbose=0, command=None, workers=1, plan=None, log=None,
                 tensorboard=None, config_text=None):
    """Train one fine-tuning run on ``data`` (a `TaskData`) into ``out``; returns the result dict.

    ``workers`` threads prepare the training batches (see ``VolumeBatches``). ``plan``: a
    ``keras_ssl3d.distribute.DistributionPlan`` (default: one device); ``settings.batch_size`` is per
    device, and only the chief writes ``out``.
    ``log`` (e.g. ``click.echo``) is told when a pretrained decoder starts the U-Net.
    ``tensorboard``: a folder for TensorBoard logs (written by the chief only), or None.
    ``config_text``: the command's options as YAML, written to ``out/config.yaml`` when the run starts.
    """
    import keras

    from keras_ssl3d.distribute import DistributionPlan

    from keras_ssl3d.training.run import recorded_config

    if resume and settings.warmup_epochs is None and "warmup_epochs" in recorded_config(out):
        # the warm-up the run started with (it may be a quarter of the --epochs it had then)
        settings = dataclasses.replace(settings, warmup_epochs=recorded_config(out)["warmup_epochs"])
    settings.check()
    s = settings.resolved(data.task)
    from keras_ssl3d.finetune.optimizer import applied_scale

    s.encoder_lr_scale = applied_scale(s.encoder, s.encoder_lr_scale)  # scratch: every layer at lr
    note = warmup_note(data.task, settings)
    if note and log is not None:
        log(note)
    plan = plan or DistributionPlan("none", [])
    out = plan.output_dir(out)
    rest, test_idx = split_test(len(data), s.test_fraction, s.split_seed)
    pool, val = split_indices(len(rest), s.val_fraction, s.split_seed)
    train_pool, val_idx = rest[pool], rest[val]  # = split_indices(n, ...) without a test split
    train_idx = label_subset(train_pool, s.label_fraction, s.seed)
    if data.task == "classification" and s.batch_size > len(train_idx):
        s.batch_size = len(train_idx)

    if s.remat and data.task != "segmentation":
        raise ConfigError("--remat applies to 3D segmentation (the 3D encoder and U-Net decoder)")
    keras.utils.set_random_seed(s.seed)
    with plan.scope():  # build, compile and fit under the distribution
        return _train_and_save(data, s, out, Split(train_idx, val_idx, test_idx), plan, resume=resume,
                               verbose=verbose, command=command, workers=workers, log=log,
                               tensorboard=tensorboard if plan.is_chief else None, config_text=config_text)


@dataclasses.dataclass
class Split:
    """Subject indices of a run: trained on (its label subset), validated on, held out for testing."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _train_and_save(data, s, out, split, plan, *, resume, verbose, command, workers, log, tensorboard, config_text):
    """One run, step by step: model, run record, batches, fit, the selected epoch, ``model/`` and ``result.json``."""
    from keras_ssl3d.fileio import write_text_atomic
    from keras_ssl3d.finetune.selection import BestEpoch
    from keras_ssl3d.training import TrainingRun
    from keras_ssl3d.training.tensorboard import tensorboard_callbacks

    model, adapted, decoder, callbacks, val_key = _build_and_compile(data, s, out, resume, log)
    select = _selection_rule(s, split, out, resume)
    config = _run_config(data, s, split, plan, adapted, decoder, select)
    run = TrainingRun(out, config=config, resume=resume, seed=s.seed, command=command,
                      checkpoint_every=s.checkpoint_every, checkpoint_seconds=s.checkpoint_seconds)
    if config_text is not None:  # --config OUT/config.yaml repeats this run
        write_text_atomic(out / "config.yaml", config_text)
    train, validation = _batches(data, s, split, plan, workers)
    callbacks = [*callbacks, *tensorboard_callbacks(tensorboard)]
    # -- convergence options (finetune.convergence): patience state from the checkpoint's history
    from keras_ssl3d.finetune import convergence
    from keras_ssl3d.finetune.callbacks import checkpoint_history, convergence_callbacks

    patience_from = convergence.patience_start(s.strategy, s.warmup_epochs, s.min_epochs)
    done_rows = checkpoint_history(out, resume)
    callbacks += convergence_callbacks(val_key, s.patience, s.lr_schedule, s.lr, s.epochs, patience_from, done_rows,
                                       s.lr_warmup_epochs)
    fit_epochs = convergence.epochs_to_fit(done_rows, val_key, s.patience, patience_from, s.epochs)
    # -- end convergence options
    if select == "best":
        callbacks.append(BestEpoch(out, val_key, resume=resume))
    history = run.fit(model, x=train, epochs=fit_epochs, callbacks=callbacks, validation_data=validation,
                      shuffle=False, verbose=verbose)
    rows = list(history.rows) if hasattr(history, "rows") else _rows(history)
    ended = convergence.outcome(rows, val_key, s.patience, patience_from, s.epochs)  # converged or at maximum
    convergence.record_outcome(out, ended)
    selected_epoch, selection = _restore_selected(model, out, rows, val_key, select)
    _save_model(model, data, s, out, config, split, selected_epoch, selection)
    return _write_result(out, data, config, split, rows, val_key, selected_epoch, selection,
                         extra={"steps_per_epoch": len(train), **ended})  # convergence speed and outcome


def _build_and_compile(data, s, out, resume, log):
    """The model (its encoder frozen as the strategy says) compiled; returns it, how its input channels and
    decoder were set up, the strategy's callbacks and the validation score that selects epochs."""
    import keras

    from keras_ssl3d.finetune.metrics import MeanDice, QuadraticKappa
    from keras_ssl3d.finetune.optimizer import finetune_optimizer
    from keras_ssl3d.finetune.warmup import apply_strategy
    from keras_ssl3d.layers import set_remat
    from keras_ssl3d.losses import get_segmentation_loss
    from keras_ssl3d.training.precision import precision_policy
    from keras_ssl3d.training.run import resumed_epoch

    with precision_policy(s.precision):
        model, adapted, decoder = build_model(data, s.encoder, s.filters, s.norm, s.adapt, decoder=s.decoder)
    if data.task == "segmentation":
        set_remat(model, s.remat)  # a loaded encoder may have been saved either way
    if decoder == "pretrained" and log is not None:
        log(f"Decoder: starting from the pretrained decoder of {s.encoder} (with a fresh output layer)")
    callbacks = apply_strategy(model, s.strategy, s.warmup_epochs, initial_epoch=resumed_epoch(out) if resume else 0,
                               pretrained_decoder=decoder == "pretrained" and s.warmup_freezes == "pretrained")
    if data.task == "segmentation":
        loss = get_segmentation_loss(s.loss)
        metrics = [MeanDice(data.num_classes, name="mean_dice")]
        monitor = "mean_dice"
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = ["accuracy", QuadraticKappa(data.num_classes, name="kappa")]
        monitor = "kappa"
    model.compile(optimizer=finetune_optimizer(model, s.lr, s.encoder_lr_scale), loss=loss, metrics=metrics)
    return model, adapted, decoder, callbacks, f"val_{monitor}"


def _selection_rule(s, split, out, resume):
    """``"best"`` (the best validation epoch goes to ``model/``) or ``"last"``. A run whose run.json has no
    "select" key keeps the last epoch: it was made before selection existed (or with "last"), and resuming
    it must not change which weights it saves."""
    from keras_ssl3d.training.run import recorded_config

    select = "best" if s.select == "best" and len(split.val) else "last"
    if resume and "select" not in recorded_config(out):
        select = "last"
    return select


def _run_config(data, s, split, plan, adapted, decoder, select):
    """What run.json records (and a resume must match)."""
    from keras_ssl3d.training.run import record_added

    config = {
        "task": data.task,
        "data": data.path,
        "encoder": s.encoder,
        "label_fraction": s.label_fraction,
        "strategy": s.strategy,
        "warmup_epochs": s.warmup_epochs,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "seed": s.seed,
        "split_seed": s.split_seed,
        "val_fraction": s.val_fraction,
        "size": data.size,
        "filters": None if s.filters is None else list(s.filters),
        "norm": s.norm,
        "loss": s.loss if data.task == "segmentation" else "cross_entropy",
        "precision": s.precision,
        "remat": s.remat,
        "channel_adaptation": adapted,
        "decoder": decoder,
        "train_subjects": [_subject_id(data, i) for i in split.train],
        "val_subjects": [_subject_id(data, i) for i in split.val],
        "distribution": plan.describe(s.batch_size),
    }
    # A test split is recorded only when there is one; "select" only for best-epoch selection with a
    # validation set (`_selection_rule`); settings added later only when not at their older value.
    if len(split.test):
        config["test_fraction"] = s.test_fraction
        config["test_subjects"] = [_subject_id(data, i) for i in split.test]
    if select == "best":
        config["select"] = "best"
    config.update(checkpoint_every=s.checkpoint_every, checkpoint_seconds=s.checkpoint_seconds, augment=s.augment,
                  patience=s.patience, lr_schedule=s.lr_schedule, steps_per_epoch=s.steps_per_epoch,
                  encoder_lr_scale=s.encoder_lr_scale, lr_warmup_epochs=s.lr_warmup_epochs, min_epochs=s.min_epochs,
                  warmup_freezes=s.warmup_freezes)
    return record_added(config, "finetune")


def _batches(data, s, split, plan, workers):
    """Training batches (shuffled, augmented) and validation batches (in order, never augmented).

    Every replica needs samples in every batch: with several, the last incomplete training batch is
    dropped (a different one each epoch, as the order is shuffled) and the last validation batch is
    completed with the first validation subjects again.
    """
    from keras_ssl3d.data.pipeline import VolumeBatches
    from keras_ssl3d.finetune.augment import augmentation

    replicated = plan.replicas > 1
    train = VolumeBatches(data.samples, batch_size=plan.global_batch(s.batch_size), shuffle=True, seed=s.seed,
                          with_labels=True, indices=epoch_indices(split.train, s.steps_per_epoch,
                                                                  plan.global_batch(s.batch_size)), workers=workers, drop_remainder=replicated,
                          transform=augmentation(s.augment))
    validation = None
    if len(split.val):
        per_device = 1 if data.task == "segmentation" else s.batch_size
        batch = plan.global_batch(per_device)
        padded = np.resize(split.val, -(-len(split.val) // batch) * batch) if replicated else split.val
        validation = VolumeBatches(data.samples, batch_size=batch, shuffle=False, with_labels=True, indices=padded)
    return train, validation


def epoch_indices(train, steps_per_epoch, batch_size):
    """The training subjects of one epoch: ``train`` repeated in whole passes to give about ``steps_per_epoch``
    steps of ``batch_size`` (at least one pass); the batches shuffle them."""
    if not steps_per_epoch or not len(train):
        return train
    passes = max(1, int(round(int(steps_per_epoch) * int(batch_size) / len(train))))
    return np.tile(np.asarray(train), passes)


def _restore_selected(model, out, rows, val_key, select):
    """Load the selected epoch's weights into ``model``; returns ``(selected epoch, how it was selected)``."""
    from keras_ssl3d.finetune.selection import selected_weights

    chosen = selected_weights(out, rows, val_key) if select == "best" else None
    if chosen is None:
        return len(rows), "last epoch"
    if chosen[1] is not None:  # else the model holds the best epoch's weights: it is the last
        import warnings

        with warnings.catch_warnings():  # the optimizer (its size changes after a warm-up) is not needed
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
            model.load_weights(str(chosen[1]))
    return chosen[0], f"best validation {val_key}"


def _save_model(model, data, s, out, config, split, selected_epoch, selection):
    """``out/model/``: a preset folder whose metadata says how the model was made."""
    from keras_ssl3d.layers import set_remat

    metadata = {
        "task": data.task,
        "encoder_source": s.encoder,
        "label_fraction": s.label_fraction,
        "strategy": s.strategy,
        "warmup_epochs": s.warmup_epochs,
        "class_names": data.class_names,
        "num_classes": data.num_classes,
        "label_mapping": None if data.label_mapping is None else {str(k): v for k, v in data.label_mapping.items()},
        "input_size": [data.size] * (3 if data.task == "segmentation" else 2),
        "channel_names": data.channel_names,
        "channel_adaptation": config["channel_adaptation"],
        "decoder": config["decoder"],
        "epochs": s.epochs,
        "lr": s.lr,
        "seed": s.seed,
        "train_subjects": config["train_subjects"],
        "val_subjects": config["val_subjects"],
        "selected_epoch": selected_epoch,
        "selection": selection,
    }
    if len(split.test):
        metadata["test_subjects"] = config["test_subjects"]
    if s.remat:  # a setting of this run (run.json), not of the saved model
        set_remat(model, False)
    model.save_pretrained(out / MODEL_DIR, metadata=metadata)


def _write_result(out, data, config, split, rows, val_key, selected_epoch, selection, extra=None):
    """``out/result.json``: the validation curve, the selected epoch and the run's config."""
    from keras_ssl3d.fileio import write_json_atomic

    curve = [row.get(val_key) for row in rows]
    result = {
        "task": data.task,
        "monitor": val_key,
        "final_score": curve[-1] if curve else None,
        # the score of the epoch model/ holds (what the CLI reports), not of the last epoch
        "selected_score": curve[selected_epoch - 1] if 0 < selected_epoch <= len(curve) else None,
        "best_score": max((c for c in curve if c is not None), default=None),
        "curve": curve,
        "train_size": int(len(split.train)),
        "val_size": int(len(split.val)),
        "test_size": int(len(split.test)),
        "selected_epoch": selected_epoch,
        "selection": selection,
        "config": config,
        **(extra or {}),
    }
    write_json_atomic(out / RESULT_FILE, result)
    return result


def _rows(history):
    hist = getattr(history, "history", {}) or {}
    if isinstance(hist, dict):
        n = max((len(v) for v in hist.values()), default=0)
        return [{k: v[i] for k, v in hist.items() if i < len(v)} for i in range(n)]
    return list(hist)


def _subject_id(data, i):
    return data.subject_ids[i] if data.subject_ids and i < len(data.subject_ids) else f"#{int(i)}"

