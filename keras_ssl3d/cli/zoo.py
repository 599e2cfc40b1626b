"""``keras-ssl3d zoo``: list, describe, download and build zoo presets; regenerate MODEL_CARDS.md."""

import json
from pathlib import Path

import click

from keras_ssl3d.cli import options
from keras_ssl3d.cli.distribution import distribution_options
from keras_ssl3d.cli.runtime import light


@click.group()
def zoo():
    """The model zoo: named presets with their recipes (see MODEL_CARDS.md)."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per preset instead of a table.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Hugging Face cache to inspect.")
@light
def list_(as_json, cache_dir):
    """Every zoo preset with its status: bundled / cached / published / recipe only."""
    from keras_ssl3d.presets.catalogue import entry_status, load_registry

    rows = []
    for name, entry in load_registry().items():
        m = entry.manifest
        rows.append({"name": name, "rank": f"{m['rank']}D", "task": m["recipe"]["task"],
                     "channels": ",".join(entry.channel_names), "status": entry_status(entry, cache_dir),
                     "hub": entry.repo_id or "-", "version": entry.version})
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    headers = ["name", "rank", "task", "channels", "status", "hub"]
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    click.echo("  ".join(h.upper().ljust(widths[h]) for h in headers).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[h]).ljust(widths[h]) for h in headers).rstrip())


@zoo.command()
@click.argument("name")
@light
def info(name):
    """Show the card of a zoo preset: recipe, input contract, data licence, status."""
    from keras_ssl3d.presets.cards import entry_card
    from keras_ssl3d.presets.catalogue import entry_status, get_entry

    entry = get_entry(name)
    click.echo(entry_card(entry, status=entry_status(entry)))


@zoo.command()
@click.argument("name")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit); default: the pinned one.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Hugging Face cache folder.")
def download(name, revision, cache_dir):
    """Fetch a zoo preset (or hub repo 'org/name') into the cache and print its folder.

    The token, when needed, comes from HF_TOKEN or `hf auth login`.
    """
    from keras_ssl3d.presets.io import load_preset
    from keras_ssl3d.presets.resolve import resolve_handle

    resolved = resolve_handle(name, revision=revision, cache_dir=cache_dir)
    if resolved.kind == "folder":
        # Verify now (sha256 against metadata and the registry's pinned value), not at first use.
        load_preset(resolved.path, expected_sha256=resolved.expected_sha256)
    click.echo(str(resolved.path))


@zoo.command()
@click.argument("name")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Your copy of the preset's data set (a layout `keras-ssl3d preprocess` understands).")
@click.option("--push", "push_repo", default=None, help="Also upload the result to this hub repo (org/name).")
@click.option("--private", is_flag=True, help="Create the hub repo as private (with --push).")
@click.option("--epochs", type=options.EPOCHS, default=None, help="Epochs (default: the recipe's, else 100).")
@click.option("--batch-size", type=options.BATCH_SIZE, default=None, help="Batch size (default: recipe's, else 2).")
@click.option("--input-size", type=options.SIZE, default=None,
              help="Cube/square side fed to the task (default: the recipe's, 128 for 3D and 224 for 2D).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the training run (checkpoints, run.json) goes; default: under KERAS_SSL3D_HOME.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build from its run folder.")
@distribution_options
def build(name, data_dir, push_repo, private, epochs, batch_size, input_size, run_dir, resume, distribute_strategy,
          devices):
    """Run a preset's recipe on your data and register the result so from_pretrained(NAME) loads it."""
    from keras_ssl3d import distribute
    from keras_ssl3d.zoo.build import build_preset

    plan = distribute.plan(distribute_strategy, devices)
    result = build_preset(name, data_dir, epochs=epochs, batch_size=batch_size, input_size=input_size,
                          run_dir=run_dir, resume=resume, echo=click.echo, plan=plan)
    click.echo(f"registered {name} at {result}")
    if push_repo:
        from keras_ssl3d.presets.publish import push_preset_folder

        pushed = push_preset_folder(result, push_repo, private=private)
        click.echo(f"pushed to {pushed.repo_id} at commit {pushed.commit_sha}: load it with {pushed.handle!r}")


@zoo.command()
@click.argument("name")
def recipe(name):
    """Print a preset's recipe as a `pretrain --config` file: `zoo recipe NAME > r.yaml`, then
    `keras-ssl3d pretrain --config r.yaml --data DIR --out RUN` trains what `zoo build NAME` does."""
    import yaml

    from keras_ssl3d.zoo.build import recipe_options
    from keras_ssl3d.presets.catalogue import get_entry

    entry = get_entry(name)
    click.echo(f"# zoo preset {name} {entry.version}: keras-ssl3d pretrain --config THIS --data DIR --out RUN\n"
               + yaml.safe_dump(recipe_options(entry), sort_keys=False), nl=False)


@zoo.command()
@click.option("--output", type=click.Path(dir_okay=False), default="MODEL_CARDS.md", show_default=True,
              help="Where to write the cards.")
@click.option("--check", is_flag=True, help="Do not write; fail (exit status 2) if the file is missing or stale.")
@light
def cards(output, check):
    """Regenerate MODEL_CARDS.md from the registry manifests."""
    from keras_ssl3d.fileio import write_text_atomic
    from keras_ssl3d.presets.cards import model_cards_markdown

    text = model_cards_markdown()
    path = Path(output)
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            from keras_ssl3d.errors import ConfigError

            raise ConfigError(f"{'stale' if current else 'missing'}: run `keras-ssl3d zoo cards --output {path}`",
                              path=path)
        click.echo(f"{path} is up to date")
        return
    from keras_ssl3d.fileio import claim_output_file
    from keras_ssl3d.presets.cards import MODEL_CARDS_COMMAND

    def generated(p):  # an earlier MODEL_CARDS.md says it was generated; any other file is the user's
        with open(p, encoding="utf-8", errors="replace") as f:
            return f"Generated by `{MODEL_CARDS_COMMAND}`" in f.read(4096)

    claim_output_file(path, generated, "model card file")
    write_text_atomic(path, text)
    click.echo(f"wrote {path}")
