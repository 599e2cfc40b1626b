"""``--cache`` and ``--workers``: where a raw data set is cached, and how many workers feed training."""

import click

from keras_ssl3d.cli import options


def cache_option(func):
    return click.option(
        "--cache", type=click.Path(file_okay=False), default=None,
        help="3D: where a raw --data set is preprocessed to (once; reused when the settings match) "
             "[default: keras-ssl3d-cache/ beside the run folder].")(func)


def workers_option(func):
    return click.option(
        "--workers", type=options.WORKERS, default=1, show_default=True,
        help="Threads preparing batches (and processes preprocessing a raw data set into the cache).")(func)
