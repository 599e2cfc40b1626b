"""Resumable training runs: per-epoch atomic checkpoints and a record of how each run was made."""

from keras_ssl3d.training.checkpoint import load_checkpoint, save_checkpoint
from keras_ssl3d.training.run import TrainingRun, environment_versions

__all__ = ["TrainingRun", "environment_versions", "load_checkpoint", "save_checkpoint"]
