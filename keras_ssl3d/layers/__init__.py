"""Reusable Keras layers."""

from keras_ssl3d.layers.micro_batch import set_micro_batches
from keras_ssl3d.layers.normalization import NORMALIZATIONS, make_norm
from keras_ssl3d.layers.residual_block import ResidualBlock, set_remat
from keras_ssl3d.layers.unet_decoder import UNetDecoder3D
from keras_ssl3d.layers.heads import JigsawHead, MLPHead, RPLHead
from keras_ssl3d.layers.cpc import CPCContext, CPCPredictor
from keras_ssl3d.layers.scores import ContrastiveScores, NTXentScores

__all__ = ["NORMALIZATIONS", "ResidualBlock", "UNetDecoder3D", "make_norm", "set_micro_batches", "set_remat"]
__all__ += ["CPCContext", "CPCPredictor", "ContrastiveScores", "NTXentScores", "JigsawHead", "MLPHead", "RPLHead"]
