"""``--resume [RUN_DIR]`` for the training commands (``pretrain``, ``finetune``).

``--resume`` alone continues the run in ``--out``; ``--resume RUN_DIR`` continues the run in
RUN_DIR, and when the other required options are left out they are taken from the command that
``RUN_DIR/run.json`` records, so ``keras-ssl3d pretrain --resume RUN_DIR`` is enough after a crash.
The settings must match the recorded ones (`TrainingRun` refuses a resume with other settings).
"""

import json
from pathlib import Path

import click

from keras_ssl3d.errors import ConfigError, RunError

FLAG = "\0resume-out"  # the value of a bare ``--resume`` (no RUN_DIR)


def resume_option(func):
    return click.option(
        "--resume", "resume", is_flag=False, flag_value=FLAG, default=None, metavar="[RUN_DIR]",
        help="Continue an interrupted run from its last checkpoint: the run in RUN_DIR, or in --out when "
             "given alone. Options left out are taken from RUN_DIR/run.json.")(func)


def resolve_resume(resume, out):
    """``(run_dir, resume: bool)`` from the ``--resume`` and ``--out`` values."""
    if resume is None:
        if out is None:
            raise click.UsageError("Missing option '--out'.")
        return out, False
    if resume == FLAG:
        if out is None:
            raise click.UsageError("--resume needs a RUN_DIR (or --out).")
        return out, True
    if out is not None and Path(out).resolve() != Path(resume).resolve():
        raise ConfigError(f"--resume {resume} and --out {out} name different run folders")
    return resume, True


def recorded_arguments(run_dir, command):
    """The arguments after ``command`` in the command line that ``run_dir/run.json`` records."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunError("nothing to resume: no run.json in the run directory", path=run_dir)
    try:
        argv = [str(a) for a in json.loads(path.read_text(encoding="utf-8")).get("command", [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"run.json is unreadable ({e})", path=path) from None
    if command not in argv:
        raise RunError(f"run.json does not record a `keras-ssl3d {command}` command: repeat its options "
                       "together with --resume", path=path)
    return argv[argv.index(command) + 1:]


def rerun_recorded(ctx, run_dir, command):
    """Invoke ``ctx.command`` again with the recorded options, resuming ``run_dir``.

    Options given on this command line come after the recorded ones, so they win: ``--resume RUN --epochs 20``
    trains on to epoch 20 (a setting that changes what is trained is refused by `TrainingRun`).
    """
    args = [*recorded_arguments(run_dir, command), *_given_arguments(ctx), "--out", str(run_dir), "--resume"]
    return ctx.command.main(args=args, prog_name=ctx.command_path, standalone_mode=False)


def _given_arguments(ctx):
    """The options typed on this command line (not --resume/--out/--config), as arguments again."""
    from click.core import ParameterSource

    args = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        if param.name in ("resume", "out", "run_dir", "config"):
            continue
        value = ctx.params.get(param.name)
        name = max(param.opts, key=len)
        if param.is_flag:
            if value:
                args.append(name)
            elif param.secondary_opts:
                args.append(max(param.secondary_opts, key=len))
        elif param.multiple:
            for item in value or ():
                args += [name, str(item)]
        elif value is not None:
            args += [name, str(value)]
    return args
