"""Fine-tuning pretrained encoders: input-channel adaptation, warm-up, metrics, inference, studies.

Submodules are imported lazily (the CLI imports ``parsing`` without loading Keras):

- ``presets.adapt``: `adapt_input_channels` (c1 -> c2 input channels: duplicate / mean / random / by_name);
- ``model``: the model a run trains (`load_encoder`, `build_model`: encoder + U-Net decoder or grading head);
- ``warmup``: `EncoderWarmup`, `apply_strategy` (frozen / warmup / full), the warm-up rule for short runs;
- ``convergence`` / ``callbacks``: `--patience`, the poly lr schedule, convergence speed in a study;
- ``optimizer``: `EncoderScaledAdam` / `EncoderScaledSGD`, the encoder at its own learning rate (--encoder-lr-scale);
- ``probe``: the frozen-encoder probe;
- ``metrics``: Dice, BraTS regions, quadratic-weighted kappa, `MeanDice`, `QuadraticKappa`;
- ``surface``: `hd95`, `mean_surface_distance` in mm (BraTS empty-mask convention);
- ``inference``: `sliding_window_predict`, `predict_labels` (MONAI's sliding-window conventions);
- ``runner`` / ``evaluation`` / ``study``: what ``keras-ssl3d finetune / evaluate / predict / study`` run;
- ``selection``: `BestEpoch` keeps the best validation epoch's weights for ``model/``;
- ``statistics`` (numpy only): `paired_comparison` of a pretrained encoder vs scratch on the same label
  subsets, `compare_to_scratch` over study rows, `read_runs_csv`.
"""

_EXPORTS = {
    "adapt_input_channels": "keras_ssl3d.presets.adapt",
    "EncoderWarmup": "keras_ssl3d.finetune.warmup",
    "apply_strategy": "keras_ssl3d.finetune.warmup",
    "MeanDice": "keras_ssl3d.finetune.metrics",
    "QuadraticKappa": "keras_ssl3d.finetune.metrics",
    "dice_score": "keras_ssl3d.finetune.metrics",
    "brats_regions": "keras_ssl3d.finetune.metrics",
    "quadratic_weighted_kappa": "keras_ssl3d.finetune.metrics",
    "hd95": "keras_ssl3d.finetune.surface",
    "mean_surface_distance": "keras_ssl3d.finetune.surface",
    "sliding_window_predict": "keras_ssl3d.finetune.inference",
    "predict_labels": "keras_ssl3d.finetune.inference",
    "paired_comparison": "keras_ssl3d.finetune.statistics",
    "compare_to_scratch": "keras_ssl3d.finetune.statistics",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_ssl3d.finetune' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
