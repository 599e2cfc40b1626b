"""``--encoder-lr-scale``, ``--lr-warmup-epochs``, ``--decoder``, ``--warmup-freezes`` (finetune, study).

Fine-tuning a pretrained model: see `keras_ssl3d.finetune.optimizer` (the encoder's learning rate),
`keras_ssl3d.finetune.convergence.epoch_lr` (the warm-up of the learning rate), `keras_ssl3d.finetune.model.build_model`
(the decoder) and `keras_ssl3d.finetune.warmup` (what a warm-up freezes). Kept apart from the commands so both
share one wording and range. No Keras import here (``--help`` stays light).
"""

import click

from keras_ssl3d.names import FINETUNE_DECODERS as DECODERS
from keras_ssl3d.names import WARMUP_FREEZES

ENCODER_LR_SCALE = click.FloatRange(min=0, min_open=True)


def transfer_options(func):
    """``--encoder-lr-scale X``, ``--lr-warmup-epochs N``, ``--decoder auto|fresh`` and ``--warmup-freezes``."""
    func = click.option(
        "--warmup-freezes", default="encoder", show_default=True, type=click.Choice(WARMUP_FREEZES),
        help="What --strategy warmup (for --warmup-epochs) and frozen keep frozen: the pretrained encoder (paper), "
             "or everything pretrained: with a pretrained decoder (--decoder auto on a Genesis / MAE preset) the "
             "decoder too, so that only the fresh output layer trains at first.")(func)
    func = click.option(
        "--decoder", default="auto", show_default=True, type=click.Choice(DECODERS),
        help="For a preset that holds a whole pretrained U-Net (Genesis, MAE): auto keeps its pretrained decoder, "
             "fresh starts a new decoder (same architecture) on its pretrained encoder. Other encoders and "
             "scratch always get a fresh decoder.")(func)
    func = click.option(
        "--lr-warmup-epochs", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
        help="Raise the learning rate linearly over the first N epochs, lr*(epoch+1)/(N+1) for epoch 0..N-1, "
             "then --lr-schedule over the rest (poly decays from lr over the remaining epochs). All runs, "
             "scratch included; less than --epochs. (--warmup-epochs is another thing: it freezes the encoder.)")(func)
    return click.option(
        "--encoder-lr-scale", default=1.0, show_default=True, type=ENCODER_LR_SCALE, metavar="SCALE",
        help="The pretrained encoder learns at lr x SCALE, the decoder and head at lr (discriminative learning "
             "rates, e.g. 0.1). Applies only to a pretrained encoder: scratch (--encoder none, a study's "
             "scratch arm) trains every layer at lr.")(func)
