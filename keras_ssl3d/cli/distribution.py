"""``--distribute`` / ``--devices`` for the training commands (see ``keras_ssl3d.distribute``)."""

import click

STRATEGY_CHOICES = ("auto", "none", "mirrored", "multi-worker")  # = keras_ssl3d.distribute.STRATEGIES


def distribution_options(func):
    func = click.option(
        "--devices", default="all", show_default=True, metavar="N|all",
        help="Local devices the strategy uses (KERAS_SSL3D_CPU_DEVICES=N splits the CPU, for tests).")(func)
    return click.option(
        "--distribute", "distribute_strategy", type=click.Choice(STRATEGY_CHOICES), default="auto",
        show_default=True,
        help="Data-parallel engine: mirrored = tf.distribute.MirroredStrategy (TensorFlow) or "
             "keras.distribution.DataParallel (JAX) over the local devices; multi-worker = DataParallel over "
             "several processes/machines (JAX, from KERAS_DISTRIBUTION_* variables); auto = mirrored when "
             "there are several accelerators. --batch-size stays per device.")(func)
