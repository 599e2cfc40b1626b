"""A study's fixed subjects and the rule for reusing a finished run: an interrupted or extended study goes on
where it stopped, and never mixes in a run made under other settings."""

from keras_ssl3d.errors import ConfigError


def study_test_subjects(data, settings):
    """The held-out test subjects of the study (``split_seed`` only: the same for every run)."""
    from keras_ssl3d.data.splits import split_test
    from keras_ssl3d.finetune.runner import _subject_id

    return [_subject_id(data, i) for i in split_test(len(data), settings.test_fraction, settings.split_seed)[1]]


def label_pool_size(data, settings):
    """Subjects a label fraction is taken of (those left after the test and validation splits)."""
    from keras_ssl3d.data.splits import split_indices, split_test

    rest = split_test(len(data), settings.test_fraction, settings.split_seed)[0]
    return len(split_indices(len(rest), settings.val_fraction, settings.split_seed)[0])


# Training settings a finished run must share with the study to be reused (both arms; encoder_lr_scale
# applies to pretrained encoders only). Settings added later are compared at their older value when absent.
REUSE_SETTINGS = ("epochs", "batch_size", "lr", "loss", "augment", "patience", "lr_schedule", "steps_per_epoch",
                  "lr_warmup_epochs", "min_epochs")
# and for a pretrained encoder (scratch trains everything from the first step at lr)
PRETRAINED_REUSE_SETTINGS = ("encoder_lr_scale", "warmup_epochs", "warmup_freezes")


def check_reused(path, result, test_subjects, strategy, settings, scratch):
    """A finished run is reused only if it was made under this study's test split, strategy and training settings."""
    from keras_ssl3d.training.run import ADDED_SETTINGS

    config = result.get("config") or {}
    wanted = {"test_subjects": ("test subjects", test_subjects), "strategy": ("strategy", strategy)}
    changed = [name for key, (name, value) in wanted.items() if config.get(key) != value]
    older = ADDED_SETTINGS["finetune"]
    keys = REUSE_SETTINGS + (() if scratch else PRETRAINED_REUSE_SETTINGS)
    changed += [f"--{key.replace('_', '-')}" for key in keys
                if config.get(key, older.get(key)) != getattr(settings, key)]
    if changed:
        raise ConfigError(f"{path}: this finished run was made with other {', '.join(changed)} than the "
                          "study asks for (a study folder from an older version, or other --test-fraction/"
                          "--split-seed/--strategy or training settings): use another --out, or delete that run to "
                          "retrain it")
