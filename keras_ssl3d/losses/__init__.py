"""Losses: contrastive (InfoNCE, triplet) and segmentation (Dice, cross-entropy)."""
