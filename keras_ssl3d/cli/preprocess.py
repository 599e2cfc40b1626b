"""``keras-ssl3d preprocess``: a NIfTI data set -> a cache of preprocessed ``.npy`` volumes."""

import time

import click

from keras_ssl3d.cli import options

from keras_ssl3d.data.layouts import LABEL_CONVENTIONS, LAYOUTS
from keras_ssl3d.data.arrays import SCALE_MODES
from keras_ssl3d.data.cache_dtype import CACHE_DTYPES


@click.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path())
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="Data set layout; auto-detected by default.")
@click.option("--size", type=options.SIZE, default=128, show_default=True,
              help="Edge of the cubic output volume (the paper uses 128).")
@click.option("--crop-foreground", is_flag=True,
              help="Crop to the foreground bounding box first (for self-supervised pretraining).")
@click.option("--scale", type=click.Choice(SCALE_MODES), default="minmax", show_default=True,
              help="Intensity scaling to [0, 1] per channel.")
@click.option("--modalities", default=None,
              help="Comma-separated modality names to keep, in channel order (e.g. t1,flair).")
@click.option("--label-convention", type=click.Choice(list(LABEL_CONVENTIONS)), default=None,
              help="Label values of the label maps: brats2021 (enhancing tumor 4) or brats2023 (3); BraTS folders "
                   "pick it from their file names (*_t1ce / *-t1c).")
@click.option("--dtype", type=click.Choice(CACHE_DTYPES), default=None,
              help="How intensities are stored: float32, uint16 (half the bytes, 16-bit fixed point: rounding "
                   "<= 7.6e-6), float16 (half, rounding <= 2.4e-4, slower to read) or uint8 (a quarter, 256 grey "
                   "levels). Default for a new cache: float32 while it fits in half this machine's memory (read "
                   "from memory, float32 is fastest), else uint16 (read from disk, half the bytes are faster). An "
                   "existing cache keeps its own.")
@click.option("--workers", type=options.WORKERS, default=1, show_default=True,
              help="Parallel worker processes.")
@click.option("--skip-bad", is_flag=True, help="Report bad subjects and go on instead of stopping.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def preprocess(src, out, layout, size, crop_foreground, scale, modalities, label_convention, dtype, workers,
               skip_bad, quiet):
    """Preprocess the data set at SRC into the cache folder OUT.

    Resumable: subjects already in OUT are skipped; every file is written atomically.
    """
    from keras_ssl3d.data.layouts import discover
    from keras_ssl3d.data.preprocess import preprocess_dataset

    mods = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    total = len(discover(src, layout=layout, modalities=mods, label_convention=label_convention).subjects)
    start = time.perf_counter()
    bar = None
    if not quiet:
        bar = click.progressbar(length=total, label="preprocessing", show_pos=True, file=click.get_text_stream("stderr"))
        bar.__enter__()

    def progress(_sid, _status):
        if bar is not None:
            bar.update(1)

    try:
        summary = preprocess_dataset(src, out, layout=layout, size=size, crop_foreground=crop_foreground,
                                     workers=workers, skip_bad=skip_bad, progress=progress, scale=scale,
                                     modalities=mods, label_convention=label_convention, dtype=dtype)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    seconds = time.perf_counter() - start
    click.echo(f"{summary['done']} subjects preprocessed, {summary['already_done']} already done, "
               f"{len(summary['failed'])} skipped as bad, of {summary['total']} ({seconds:.1f} s)")
    for sid, msg in summary["failed"]:
        click.echo(f"  skipped {sid}: {msg}")
    click.echo(f"cache: {out} (manifest: {summary['manifest']})")
    how = "" if summary["dtype_reason"] is None else f" ({summary['dtype_reason']})"
    click.echo(f"intensities stored as {summary['dtype']}{how}")
