"""Evaluation metrics: hard Dice on full volumes, BraTS regions, quadratic-weighted kappa, accuracy.

Surface distances (HD95, mean surface distance, in mm) are in `keras_ssl3d.finetune.surface`;
`evaluate_segmentation` reports them next to Dice when it is given the voxel spacings.

The numpy functions evaluate predicted label maps after inference; `MeanDice` is a Keras metric
(keras.ops only) to monitor training.

Empty-mask convention: when a structure is absent from both the prediction and the ground truth,
its Dice is 1.0 (nothing to find, nothing found); when it is absent from only one, Dice is 0.0.
This is the BraTS challenge convention and keeps every subject in the average.
"""

import keras
import numpy as np
from keras import ops

from keras_ssl3d.errors import ConfigError

# BraTS label values in the original files: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing
# (BraTS up to 2021); from BraTS 2023 enhancing tumour is 3.
BRATS_REGIONS = {
    "whole_tumor": (1, 2, 4),
    "tumor_core": (1, 4),
    "enhancing_tumor": (4,),
}
BRATS2023_REGIONS = {
    "whole_tumor": (1, 2, 3),
    "tumor_core": (1, 3),
    "enhancing_tumor": (3,),
}


def dice_score(pred_mask, true_mask, empty_value=1.0):
    """Dice of two boolean masks; ``empty_value`` (1.0) when both are empty."""
    pred_mask = np.asarray(pred_mask, dtype=bool)
    true_mask = np.asarray(true_mask, dtype=bool)
    if pred_mask.shape != true_mask.shape:
        raise ConfigError(f"prediction shape {pred_mask.shape} != ground truth shape {true_mask.shape}")
    denominator = int(pred_mask.sum()) + int(true_mask.sum())
    if denominator == 0:
        return float(empty_value)
    return 2.0 * int(np.logical_and(pred_mask, true_mask).sum()) / denominator


def dice_per_class(pred_labels, true_labels, num_classes, include_background=False):
    """``{class_index: Dice}`` for one volume (classes ``1..K-1``, plus 0 with the background)."""
    start = 0 if include_background else 1
    return {k: dice_score(pred_labels == k, true_labels == k) for k in range(start, int(num_classes))}


def mean_dice(pred_labels, true_labels, num_classes, include_background=False):
    """Mean over classes of the per-class Dice of one volume (background left out by default)."""
    scores = dice_per_class(pred_labels, true_labels, num_classes, include_background)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def normalize_label_mapping(label_mapping):
    """``{original_value: stored_index}`` with int keys/values (JSON turns keys into strings)."""
    if label_mapping is None:
        return None
    try:
        return {int(k): int(v) for k, v in dict(label_mapping).items()}
    except (TypeError, ValueError):
        raise ConfigError(f"label mapping must map integer labels to integer indices, got {label_mapping!r}") from None


def brats_regions(label_mapping=None):
    """BraTS regions as sets of *stored* label indices.

    ``label_mapping`` maps the original label values to the indices stored in the label maps
    (the data cache stores BraTS label 4 as 3: ``{0: 0, 1: 1, 2: 2, 4: 3}``); ``None`` means the
    label maps hold the original values.
    """
    mapping = normalize_label_mapping(label_mapping)
    regions = {}
    # The original values say the release: 4 (enhancing up to 2021) or 0..3 without 4 (2023/2024).
    table = BRATS2023_REGIONS if mapping is not None and set(mapping) == {0, 1, 2, 3} else BRATS_REGIONS
    for name, originals in table.items():
        if mapping is None:
            regions[name] = tuple(originals)
        else:
            missing = [v for v in originals if v not in mapping]
            if missing:
                raise ConfigError(f"label mapping {mapping} has no entry for BraTS label(s) {missing}")
            regions[name] = tuple(mapping[v] for v in originals)
    return regions


def is_brats_labels(label_mapping=None, label_names=None, num_classes=None):
    """Whether the labels look like BraTS, so regions apply: original values {0, 1, 2, 4}, or BraTS 2023's
    {0, 1, 2, 3} with BraTS class names (enhancing tumor)."""
    mapping = normalize_label_mapping(label_mapping)
    if mapping is not None:
        if set(mapping) == {0, 1, 2, 3}:
            names = " ".join(str(n).lower() for n in (label_names or []))
            return "enhanc" in names and ("edema" in names or "oedema" in names)
        return set(mapping) == {0, 1, 2, 4}
    if label_names is not None:
        names = " ".join(str(n).lower() for n in label_names)
        return len(label_names) == 4 and ("enhanc" in names or "edema" in names or "oedema" in names)
    return False


def region_dice(pred_labels, true_labels, regions):
    """``{region: Dice}`` where a region is the union of the given label indices."""
    return {name: dice_score(np.isin(pred_labels, labels), np.isin(true_labels, labels))
            for name, labels in regions.items()}


def surface_structures(pred_labels, true_labels, names, regions=None):
    """``{name: (pred_mask, true_mask)}`` scored by surface distance: the BraTS regions, else each
    foreground class."""
    if regions:
        return {name: (np.isin(pred_labels, labels), np.isin(true_labels, labels)) for name, labels in regions.items()}
    return {names[k]: (pred_labels == k, true_labels == k) for k in range(1, len(names))}


def evaluate_segmentation(pred_volumes, true_volumes, num_classes, class_names=None, regions=None, spacings=None):
    """Dice over a set of volumes (per class, per region, mean without background).

    The volumes may be iterators (one subject in memory at a time). Returns ``{"per_subject": [...], "per_class": {name: mean}, "regions": {name: mean},
    "mean_dice": float}`` where means are over subjects (each subject's Dice follows the
    empty-mask convention above). With ``spacings`` (one voxel spacing in mm per subject), also
    ``"hd95"`` and ``"msd"`` ``{structure: mean mm}`` and ``"mean_hd95"``, ``"mean_msd"`` (over the
    structures): per BraTS region, else per foreground class (`keras_ssl3d.finetune.surface`).
    """
    if hasattr(pred_volumes, "__len__") and hasattr(true_volumes, "__len__") and \
            len(pred_volumes) != len(true_volumes):
        raise ConfigError(f"{len(pred_volumes)} predictions for {len(true_volumes)} ground truths")
    names = list(class_names) if class_names else [f"class_{k}" for k in range(num_classes)]
    spacings = None if spacings is None else list(spacings)
    per_subject = []
    pairs = zip(pred_volumes, true_volumes, strict=True)
    while True:
        try:
            pred, true = next(pairs)
        except StopIteration:
            break
        except ValueError as e:
            if "zip()" not in str(e):
                raise
            raise ConfigError("as many predictions as ground truths are needed") from None
        row = {"per_class": {names[k]: v for k, v in dice_per_class(pred, true, num_classes).items()}}
        row["mean_dice"] = float(np.mean(list(row["per_class"].values()))) if num_classes > 1 else float("nan")
        if regions:
            row["regions"] = region_dice(pred, true, regions)
        if spacings is not None:
            if len(per_subject) >= len(spacings):
                raise ConfigError(f"{len(spacings)} voxel spacings for more subjects")
            row.update(_surface_row(pred, true, names[:num_classes], regions, spacings[len(per_subject)]))
        per_subject.append(row)
    result = {
        "per_subject": per_subject,
        "per_class": {n: float(np.mean([r["per_class"][n] for r in per_subject])) for n in names[1:num_classes]},
        "mean_dice": float(np.mean([r["mean_dice"] for r in per_subject])) if per_subject else float("nan"),
    }
    if regions:
        result["regions"] = {n: float(np.mean([r["regions"][n] for r in per_subject])) for n in regions}
    if spacings is not None and per_subject:
        if len(spacings) != len(per_subject):
            raise ConfigError(f"{len(spacings)} voxel spacings for {len(per_subject)} subjects")
        for metric in ("hd95", "msd"):
            result[metric] = {n: float(np.mean([r[metric][n] for r in per_subject])) for n in per_subject[0][metric]}
            result[f"mean_{metric}"] = float(np.mean(list(result[metric].values()))) if result[metric] else float("nan")
    return result


def _surface_row(pred, true, names, regions, spacing):
    from keras_ssl3d.finetune.surface import surface_scores

    scores = {name: surface_scores(p, t, spacing) for name, (p, t) in
              surface_structures(pred, true, names, regions).items()}
    return {"spacing": [float(s) for s in spacing],
            "hd95": {n: v["hd95"] for n, v in scores.items()},
            "msd": {n: v["msd"] for n, v in scores.items()}}


def confusion_matrix(y_true, y_pred, num_classes):
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"{y_pred.size} predictions for {y_true.size} labels")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes - 1}]")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def quadratic_weighted_kappa(y_true, y_pred, num_classes=None):
    """Cohen's kappa with quadratic weights (the retinopathy-grading metric).

    ``1 - sum(W * O) / sum(W * E)`` with ``W_ij = (i - j)^2 / (K - 1)^2``, ``O`` the confusion
    matrix and ``E`` the outer product of its marginals scaled to the same total. Returns 1.0
    when both raters give one and the same grade everywhere (no disagreement possible).
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    observed = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    total = observed.sum()
    if total == 0:
        return float("nan")
    idx = np.arange(num_classes)
    weights = (idx[:, None] - idx[None, :]) ** 2 / max(num_classes - 1, 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    denominator = (weights * expected).sum()
    if denominator == 0:
        return 1.0 if (weights * observed).sum() == 0 else 0.0
    return float(1.0 - (weights * observed).sum() / denominator)


def accuracy(y_true, y_pred):
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"{y_pred.size} predictions for {y_true.size} labels")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class MeanDice(keras.metrics.Metric):
    """Hard (argmax) Dice averaged over the foreground classes, for monitoring training.

    Intersections and sizes are accumulated over all batches of an epoch, so the value is the
    Dice of the whole epoch's voxels per class (not a mean over subjects, which
    `evaluate_segmentation` computes on full volumes). A class absent from both predictions and
    targets over the epoch counts as 1.0, as above.
    """

    def __init__(self, num_classes, include_background=False, name="mean_dice", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = int(num_classes)
        self.include_background = bool(include_background)
        self.intersection = self.add_variable(shape=(self.num_classes,), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(self.num_classes,), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape):
            if y_true.shape[-1] == self.num_classes and self.num_classes > 1:
                y_true = ops.argmax(y_true, axis=-1)
            else:
                y_true = ops.squeeze(y_true, axis=-1)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype=self.dtype)
        true = ops.one_hot(ops.cast(y_true, "int32"), self.num_classes, dtype=self.dtype)
        axes = tuple(range(len(pred.shape) - 1))
        self.intersection.assign_add(ops.sum(pred * true, axis=axes))
        self.total.assign_add(ops.sum(pred, axis=axes) + ops.sum(true, axis=axes))

    def result(self):
        total = ops.convert_to_tensor(self.total)
        intersection = ops.convert_to_tensor(self.intersection)
        dice = ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1.0), ops.ones_like(total))
        if not self.include_background and self.num_classes > 1:
            dice = dice[1:]
        return ops.mean(dice)

    def reset_state(self):
        self.intersection.assign(ops.zeros((self.num_classes,), dtype=self.dtype))
        self.total.assign(ops.zeros((self.num_classes,), dtype=self.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, include_background=self.include_background)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl3d")
class QuadraticKappa(keras.metrics.Metric):
    """Quadratic-weighted kappa of argmax predictions, from a confusion matrix accumulated per epoch.

    Same formula as `quadratic_weighted_kappa`; targets are integer grades ``(N,)``/``(N, 1)`` or
    one-hot ``(N, K)``.
    """

    def __init__(self, num_classes, name="kappa", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.argmax(y_true, axis=-1) if y_true.shape[-1] == self.num_classes else y_true[..., 0]
        true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes, dtype=self.dtype)
        pred = ops.one_hot(ops.reshape(ops.argmax(y_pred, axis=-1), (-1,)), self.num_classes, dtype=self.dtype)
        self.matrix.assign_add(ops.matmul(ops.transpose(true), pred))

    def result(self):
        observed = ops.convert_to_tensor(self.matrix)
        total = ops.maximum(ops.sum(observed), 1.0)
        idx = ops.cast(ops.arange(self.num_classes), self.dtype)
        weights = ops.square(idx[:, None] - idx[None, :]) / float(max(self.num_classes - 1, 1) ** 2)
        expected = ops.outer(ops.sum(observed, axis=1), ops.sum(observed, axis=0)) / total
        numerator = ops.sum(weights * observed)
        denominator = ops.sum(weights * expected)
        return ops.where(denominator > 0, 1.0 - numerator / ops.maximum(denominator, 1e-12),
                         ops.where(numerator > 0, 0.0, 1.0))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes), dtype=self.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
