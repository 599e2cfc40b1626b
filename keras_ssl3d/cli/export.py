"""``keras-ssl3d export HANDLE OUT``: a preset as a TF-Hub style reusable SavedModel or an ONNX file."""

import click

from keras_ssl3d.cli import options


@click.command()
@click.argument("handle")
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["saved_model", "tfhub-tgz", "onnx"]), default="saved_model",
              show_default=True, help="A SavedModel folder, the compressed TF Hub module (.tar.gz), or an "
                                      "ONNX file (the whole model; needs the onnx extra).")
@click.option("--in-channels", type=options.CHANNELS, default=None, help="Adapt the input layer first.")
@click.option("--revision", default=None, help="Hub revision of HANDLE.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier keras-ssl3d export at OUT (never anything else: a folder or file that is "
                   "not an earlier export is refused).")
def export(handle, out, fmt, in_channels, revision, overwrite):
    """Export the model of HANDLE (zoo name, hub repo, preset folder or .keras file) to OUT.

    OUT must be new (or an empty folder); an earlier export there is replaced only with --overwrite.
    Load the result with `m = tensorflow_hub.load(OUT)` (keep `m` referenced) or with
    `keras.layers.TFSMLayer(OUT, call_endpoint="serve")` in a Keras 3 model (TensorFlow backend).
    `hub.KerasLayer` is tf-keras and cannot sit in a Keras 3 model.
    """
    import keras

    from keras_ssl3d.errors import ConfigError

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"export needs KERAS_BACKEND=tensorflow (this process uses {keras.backend.backend()!r})")
    from keras_ssl3d.presets.mixin import PretrainedMixin
    from keras_ssl3d.zoo.export import claim_export, export_saved_model

    claim_export(out, fmt, overwrite=overwrite, option="--overwrite")  # before loading anything
    model = PretrainedMixin.from_pretrained.__func__(keras.Model, handle, in_channels=in_channels,
                                                     revision=revision)
    if fmt == "onnx":
        from keras_ssl3d.zoo.onnx import export_onnx

        export_onnx(model, out, overwrite=overwrite, option="--overwrite")
    else:
        export_saved_model(model, out, format=fmt, overwrite=overwrite, option="--overwrite")
    click.echo(f"exported {handle} ({type(model).__name__}, {model.count_params()} parameters) to {out} [{fmt}]")
