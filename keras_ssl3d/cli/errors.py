"""How the CLI reports errors: one line, naming the file and the problem, exit status 2."""

import sys

import click

from keras_ssl3d.errors import SSL3DError


def run_cli(group, args=None):
    """Run a click group; user errors print ``Error: ...`` and return 2 (never a stack trace)."""
    try:
        result = group.main(args=args, prog_name="keras-ssl3d", standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns Ctrl-C into Abort; TrainingRun's KeyboardInterrupt says where the checkpoint is.
        cause = e.__cause__ or e.__context__
        if isinstance(cause, KeyboardInterrupt) and str(cause):
            click.echo(f"Interrupted: {cause}", err=True)
        else:
            click.echo("Aborted.", err=True)
        return 130
    except click.UsageError as e:  # one line too, with the command to ask for help
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"Error: {e.format_message()}{where}", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return 2
    except SSL3DError as e:
        click.echo(f"Error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt as e:  # TrainingRun says where its checkpoint is and how to resume
        click.echo(f"Interrupted: {e}" if str(e) else "Interrupted.", err=True)
        return 130
    except OSError as e:  # disk full, permission denied, ...: name the file
        from keras_ssl3d.fileio import disk_full_reason

        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"Error: {where}{disk_full_reason(e) or e.strerror or e}", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    # With standalone_mode=False click returns a command's ctx.exit(code) value instead of exiting.
    return result if isinstance(result, int) else 0


def fail(message, path=None):
    """Raise a user error from inside a command."""
    raise SSL3DError(message, path=path)


__all__ = ["fail", "run_cli", "sys"]
