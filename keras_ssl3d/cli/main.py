"""``keras-ssl3d``: a click group whose subcommands are imported only when used.

Importing Keras and a backend takes seconds, so ``keras-ssl3d --help`` and ``--version`` must not
import any subcommand module. Each entry below maps a command name to ``module:attribute`` and a
one-line help text; the module is imported when the command runs.
"""

import os
import sys

import click

from keras_ssl3d.version import __version__

# name -> (module, attribute, short help)
COMMANDS = {
    "info": ("keras_ssl3d.cli.info", "info", "Show backend, library versions and devices."),
    "preprocess": ("keras_ssl3d.cli.preprocess", "preprocess", "Preprocess a NIfTI data set into a cache."),
    "pretrain": ("keras_ssl3d.cli.pretrain", "pretrain", "Pretrain an encoder with a self-supervised task."),
    "plan": ("keras_ssl3d.cli.plan", "plan", "Estimate a pretraining step's memory; pick remat/micro-batches."),
    "finetune": ("keras_ssl3d.cli.finetune", "finetune", "Fine-tune an encoder for segmentation/classification."),
    "evaluate": ("keras_ssl3d.cli.evaluate", "evaluate", "Evaluate a fine-tuned model (Dice, HD95, kappa)."),
    "predict": ("keras_ssl3d.cli.predict", "predict", "Predict label maps as NIfTI in the input geometry."),
    "study": ("keras_ssl3d.cli.study", "study", "Data-efficiency study: pretrained vs scratch."),
    "probe": ("keras_ssl3d.cli.probe", "probe", "Frozen-encoder probe vs a random encoder of its architecture."),
    "zoo": ("keras_ssl3d.cli.zoo", "zoo", "List, describe, download and build zoo presets."),
    "push": ("keras_ssl3d.cli.push", "push", "Upload a preset folder to the Hugging Face Hub."),
    "export": ("keras_ssl3d.cli.export", "export", "Export a preset as a TF SavedModel, TF-Hub module or ONNX file."),
    "demo": ("keras_ssl3d.cli.demo", "demo", "Run the whole job on built-in synthetic data."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            return None
        from keras_ssl3d.cli.runtime import needs_keras

        return needs_keras(getattr(module, attr))

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="keras-ssl3d")
@click.option("--verbose", is_flag=True, envvar="KERAS_SSL3D_VERBOSE",
              help="Show TensorFlow's own log lines (hidden by default; TF_CPP_MIN_LOG_LEVEL=0 shows them too).")
def cli(verbose):
    """Self-supervised 3D encoders for medical imaging (Taleb et al., NeurIPS 2020) in Keras 3.

    The backend is Keras's: set KERAS_BACKEND=tensorflow (default), jax or torch.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main():
    """Entry point that turns user errors into one line and exit status 2."""
    from keras_ssl3d.cli.errors import run_cli

    sys.exit(run_cli(cli))


if __name__ == "__main__":
    main()
