"""Losses: contrastive (InfoNCE, triplet), segmentation (Dice, cross-entropy) and masked reconstruction."""

from keras_ssl3d.losses.segmentation import (  # noqa: E402,F401
    DiceCELoss,
    SegmentationCrossEntropy,
    SoftDiceLoss,
    get_segmentation_loss,
)
from keras_ssl3d.losses.contrastive import (  # noqa: E402,F401
    InfoNCE,
    InfoNCEAccuracy,
    TripletAccuracy,
    TripletLoss,
)
from keras_ssl3d.losses.reconstruction import MaskedMSE  # noqa: E402,F401
