"""``--task-option KEY=VALUE`` for ``pretrain``: any constructor argument of the chosen task class.

Values are YAML scalars/lists (``grid=3``, ``temperature=0.2``, ``flip_p=0``, ``num_permutations=100``),
checked against the task's ``__init__`` signature so a typo is a one-line ConfigError, never an
ignored setting. No Keras import here: the CLI's ``--help`` must not start TensorFlow.
"""

import inspect

from keras_ssl3d.errors import ConfigError

# Arguments set by the command itself (the encoder, --size) or not meaningful as a setting.
NOT_SETTABLE = ("self", "encoder", "name", "input_size")


def settable(cls):
    """The names of ``cls.__init__``'s arguments a ``--task-option`` may set."""
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in NOT_SETTABLE and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def parse_task_options(items, task, cls):
    """``{key: value}`` from ``KEY=VALUE`` strings (or a mapping, from a config file), checked against ``cls``."""
    import yaml

    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or ():
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--task-option {item!r}: expected KEY=VALUE")
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError:
                raise ConfigError(f"--task-option {key.strip()}: cannot parse value {text!r}") from None
            pairs.append((key.strip(), value))
    allowed = settable(cls)
    parsed = {}
    for key, value in pairs:
        if key not in allowed:
            raise ConfigError(f"--task-option {key}: {task} has no such setting; it takes {', '.join(allowed)}")
        if isinstance(value, dict):
            raise ConfigError(f"--task-option {key}: a mapping is not a valid value")
        parsed[key] = value
    return parsed
