"""``--task-option KEY=VALUE`` for ``pretrain``: any constructor argument of the chosen task class.

Values are YAML scalars/lists (``grid=3``, ``temperature=0.2``, ``flip_p=0``, ``num_permutations=100``),
checked against the task's ``__init__`` signature so a typo is a one-line ConfigError, never an
ignored setting. No Keras import here: the CLI's ``--help`` must not start TensorFlow.
"""

import inspect

from keras_ssl3d.errors import ConfigError

# Arguments set by the command itself (the encoder, --size) or not meaningful as a setting.
NOT_SETTABLE = ("self", "encoder", "name", "input_size")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _probability(v):
    return _number(v) and 0 <= v <= 1


def _at_least(n):
    return lambda v: _integer(v) and v >= n


# The range of every task setting, by argument name (one meaning per name across the tasks; a test checks
# that every settable argument of every task has a rule). Checked where --task-option is parsed, before any
# data is read, so `temperature=0` or `paint_p=5` is a one-line error instead of a crash at compile or a
# silently wrong run. Settings that depend on each other or on --size are checked when the task is built.
RULES = {
    "temperature": ("a number > 0", lambda v: _number(v) and v > 0),
    "margin": ("a number > 0", lambda v: _number(v) and v > 0),
    "mask_ratio": ("a number in (0, 1)", lambda v: _number(v) and 0 < v < 1),
    "grid": ("an integer >= 2", _at_least(2)),
    "jitter": ("an integer >= 0", _at_least(0)),
    "steps": ("an integer >= 1", _at_least(1)),
    "embedding_dim": ("an integer >= 1", _at_least(1)),
    "code_size": ("an integer >= 1", _at_least(1)),
    "hidden_units": ("an integer >= 1", _at_least(1)),
    "projection_dim": ("an integer >= 1", _at_least(1)),
    "num_permutations": ("an integer >= 1", _at_least(1)),
    "permutation_seed": ("an integer >= 0", _at_least(0)),
    "augment_on": ("one of host, device, auto", lambda v: v in ("host", "device", "auto")),
    "patch_size": ("an integer >= 1, or a list of them (one per axis)",
                   lambda v: _at_least(1)(v) or (isinstance(v, list) and len(v) > 0 and all(map(_at_least(1), v)))),
}
PROBABILITY = ("a probability in [0, 1]", _probability)  # every setting named *_p


def rule(name):
    """``(description, check)`` for the task setting ``name``, or None when there is none."""
    return PROBABILITY if name.endswith("_p") else RULES.get(name)


def settable(cls):
    """The names of ``cls.__init__``'s arguments a ``--task-option`` may set."""
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in NOT_SETTABLE and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def parse_task_options(items, task, cls):
    """``{key: value}`` from ``KEY=VALUE`` strings (or a mapping, from a config file), checked against ``cls``."""
    from keras_ssl3d.cli.config_file import load_plain_yaml

    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or ():
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--task-option {item!r}: expected KEY=VALUE")
            try:
                value = load_plain_yaml(text, what="a --task-option value") if text.strip() else None
            except ConfigError as e:
                raise ConfigError(f"--task-option {key.strip()}: cannot parse value {text!r} ({e})") from None
            pairs.append((key.strip(), value))
    allowed = settable(cls)
    parsed = {}
    for key, value in pairs:
        if key not in allowed:
            raise ConfigError(f"--task-option {key}: {task} has no such setting; it takes {', '.join(allowed)}")
        if isinstance(value, dict):
            raise ConfigError(f"--task-option {key}: a mapping is not a valid value")
        described = rule(key)
        default = inspect.signature(cls.__init__).parameters[key].default
        if described is not None and not (value is None and default is None) and not described[1](value):
            raise ConfigError(f"--task-option {key}={_shown(value)}: {task}'s {key} must be {described[0]}")
        parsed[key] = value
    return parsed


def _shown(value):
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
