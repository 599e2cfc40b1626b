"""``--config FILE.yaml`` for the training commands, and the ``RUN/config.yaml`` every run writes.

A config file is a YAML mapping of option names as on the command line without the dashes
(``task: rotation``, ``batch_size: 2`` or ``batch-size: 2``, ``task_option: {grid: 3}``). It sets the
command's defaults through click's ``default_map``, so the command line wins over the file. A run
writes every option it resolved (minus ``--out``, ``--resume`` and ``--config``) as ``RUN/config.yaml``:
``--config RUN/config.yaml --out NEW`` repeats the run. No Keras import here (``--help`` stays light).
"""

import json
from pathlib import Path

import click

from keras_ssl3d.errors import ConfigError

CONFIG_FILE = "config.yaml"
NOT_IN_FILE = ("config", "resume")  # a file cannot name another file, nor resume a run
NOT_WRITTEN = ("config", "resume", "out")  # where a run goes is not part of what it is
MAX_CONFIG_BYTES = 1024 * 1024  # options, not data


def option_key(param):
    """The name a config file uses for ``param``: its long option without dashes (``--batch-size`` -> batch_size)."""
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-").replace("-", "_")


def _as_default(param, value, path, key):
    """A file value as click takes it for a default (``multiple`` options take lists, Choices strings)."""
    if param.multiple:
        if isinstance(value, dict):  # task_option: {grid: 3} -> ["grid=3"]
            return [f"{k}={json.dumps(v)}" for k, v in value.items()]
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, (dict, list)):
        raise ConfigError(f"option {key!r} takes one value, not a {type(value).__name__}", path=path)
    if value is not None and isinstance(param.type, click.Choice):
        return str(value)
    return value


def load_plain_yaml(text, path=None, what="a config file"):
    """``yaml.safe_load`` without anchors and aliases (``&a`` / ``*a``): options never need them, and nested
    aliases expand exponentially (a 500-byte "billion laughs" file takes all memory)."""
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: nothing is expanded here
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(f"YAML anchors and aliases (&name, *name) are not allowed in {what}", path=path)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not a valid YAML file ({str(e).splitlines()[0]})", path=path) from None


def _load(ctx, param, value):
    if value is None:
        return value
    path = Path(value)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"a config file is at most {MAX_CONFIG_BYTES // 1024} KiB of options, this one has "
                              f"{path.stat().st_size} bytes", path=path)
        data = load_plain_yaml(path.read_text(encoding="utf-8"), path=path)
    except OSError as e:
        raise ConfigError(f"cannot read the config file ({e.strerror or e})", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not a valid YAML file ({str(e).splitlines()[0]})", path=path) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("a config file is a YAML mapping of option names to values", path=path)
    params = {option_key(p): p for p in ctx.command.params if isinstance(p, click.Option)}
    defaults = {}
    for key, item in data.items():
        name = str(key).replace("-", "_")
        if name not in params or name in NOT_IN_FILE:
            known = ", ".join(k for k in params if k not in NOT_IN_FILE)
            raise ConfigError(f"unknown option {key!r} for `{ctx.info_name}` (known: {known})", path=path)
        defaults[params[name].name] = _as_default(params[name], item, path, key)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option(func):
    """``--config FILE.yaml``: read first (eager), so its values become the other options' defaults."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), default=None, is_eager=True, expose_value=False,
        callback=_load, metavar="FILE.yaml",
        help="Options from a YAML file (names as on the command line, e.g. `epochs: 3`, "
             "`task_option: {grid: 3}`); the command line wins. Every run writes OUT/config.yaml.")(func)


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def resolved_config(ctx):
    """YAML text of every option this invocation resolved (file, command line, defaults), for RUN/config.yaml."""
    import yaml

    values = {}
    for param in ctx.command.params:
        key = option_key(param) if isinstance(param, click.Option) else None
        if key is None or key in NOT_WRITTEN:
            continue
        value = ctx.params.get(param.name)
        if value is not None and isinstance(param.type, click.Path):
            value = str(Path(value).absolute())  # the same data from any working folder
        values[key] = _plain(value)
    header = f"# keras-ssl3d {ctx.info_name} options; repeat with: keras-ssl3d {ctx.info_name} --config THIS --out NEW\n"
    return header + yaml.safe_dump(values, sort_keys=False)


def write_resolved_config(ctx, run_dir):
    """Write ``run_dir/config.yaml`` (atomically)."""
    from keras_ssl3d.fileio import write_text_atomic

    write_text_atomic(Path(run_dir) / CONFIG_FILE, resolved_config(ctx))
