"""``keras-ssl3d push PRESET_DIR REPO_ID``: publish a preset folder with a generated model card."""

import click


@click.command()
@click.argument("preset_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--revision", default=None, help="Branch to commit to (created from main if missing).")
@click.option("--message", "commit_message", default=None, help="Commit message.")
def push(preset_dir, repo_id, private, revision, commit_message):
    """Upload PRESET_DIR (config.json, model.weights.h5, metadata.json) + README card to REPO_ID.

    The token comes from HF_TOKEN or `hf auth login` (never from the command line, where other
    users could read it); it is never printed. HF_ENDPOINT selects another hub.
    """
    from keras_ssl3d.presets.publish import push_preset_folder

    result = push_preset_folder(preset_dir, repo_id, private=private, revision=revision,
                                commit_message=commit_message)
    click.echo(f"pushed {preset_dir} to {result.repo_id} ({result.revision}) at commit {result.commit_sha}")
    click.echo(f"weights sha256 {result.weights_sha256}")
    click.echo(f"load it with: from_pretrained({result.handle!r})")
