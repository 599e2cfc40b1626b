"""Losses: contrastive (InfoNCE, triplet) and segmentation (Dice, cross-entropy)."""

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
