"""Evaluate and apply fine-tuned models (the ``evaluate`` and ``predict`` commands)."""

import json
from pathlib import Path

import numpy as np

from keras_ssl3d.errors import ConfigError, DataError, OutputError, PresetError
from keras_ssl3d.finetune import metrics as M

# Not BraTS' "_seg": a prediction must never take the name of a ground-truth label file.
PREDICTION_SUFFIX = "_pred.nii.gz"
# The predictions a `predict` wrote in an output folder ({file name: sha256}): only these are its own.
PREDICTIONS_RECORD = "keras-ssl3d-predictions.json"
EVALUATION_TAG = {"written_by": "keras-ssl3d evaluate"}


def load_finetuned(path):
    """``(model, metadata)`` from a fine-tuning run folder (``RUN/model``) or a preset folder."""
    import keras_ssl3d.finetune.metrics  # noqa: F401  (registers the compiled metrics and losses)
    import keras_ssl3d.losses  # noqa: F401
    from keras_ssl3d.presets import load_preset, read_metadata

    path = Path(path)
    if (path / "model" / "metadata.json").is_file():
        path = path / "model"
    elif (path / "encoder" / "metadata.json").is_file() and not (path / "metadata.json").is_file():
        raise PresetError("this is a pretraining run (it holds encoder/), not a fine-tuned model: fine-tune it "
                          f"with `keras-ssl3d finetune --encoder {path}`", path=path)
    if not path.is_dir():
        raise PresetError("model folder does not exist", path=path)
    metadata = read_metadata(path)
    if metadata.get("task") not in ("segmentation", "classification"):  # checked before the weights load
        if metadata.get("task"):
            raise PresetError(f"is a pretrained encoder (task {metadata['task']}), not a fine-tuned model: "
                              f"fine-tune it with `keras-ssl3d finetune --encoder {path}`", path=path)
        raise PresetError("not a fine-tuned model (its metadata has no segmentation/classification task); "
                          "make one with `keras-ssl3d finetune`", path=path)
    model = load_preset(path)
    return model, metadata


def model_size(metadata):
    size = metadata.get("input_size")
    if not size:
        raise PresetError("model metadata has no input_size")
    return int(size[0])


def label_mapping(metadata):
    return M.normalize_label_mapping(metadata.get("label_mapping"))


def select_subjects(data, metadata, subjects="all"):
    """Indices of the subjects to evaluate: all, or the run's test / validation / training subjects."""
    if subjects == "all":
        return np.arange(len(data))
    wanted = metadata.get(f"{subjects}_subjects")
    if wanted is None:
        raise ConfigError(f"the model metadata does not list its {subjects} subjects")
    index = {sid: i for i, sid in enumerate(data.subject_ids or [])}
    missing = [s for s in wanted if s not in index]
    if missing:
        raise DataError(f"{len(missing)} {subjects} subject(s) of the model are not in the data "
                        f"(e.g. {missing[0]!r})", path=data.path)
    return np.asarray([index[s] for s in wanted], dtype=np.intp)


def grid_spacing(info, shape):
    """Voxel spacing (mm) of a cached subject served at ``shape``: the scan's spacing times the cropped
    extent over ``shape`` (the resize keeps the extent: half-voxel-centred, as torch / tf.image)."""
    spacing = info.get("spacing")
    box = info.get("crop_bbox") or [[0, n] for n in info.get("ras_shape") or []]
    if not spacing or len(spacing) != 3 or len(box) != 3 or len(shape) != 3:
        raise DataError(f"the cache manifest has no voxel spacing for subject {info.get('id')!r}: "
                        "preprocess the data again to score surface distances in mm")
    return tuple(float(s) * (hi - lo) / n for s, (lo, hi), n in zip(spacing, box, shape))


def subject_spacings(samples, indices):
    """The voxel spacing of each subject as served, or ``None`` for in-memory arrays (no geometry)."""
    if not hasattr(samples, "info"):
        return None
    shape = tuple(int(n) for n in samples.spatial_shape)
    return [grid_spacing(samples.info(int(i)), shape) for i in indices]


def evaluate_model(model, metadata, data, subjects="all", batch_size=1):
    """Scores of ``model`` on ``data`` (a `TaskData`): Dice (+ BraTS regions) and surface distances (HD95,
    MSD in mm, on the model's grid) in 3D, kappa/accuracy in 2D."""
    from keras_ssl3d.finetune.inference import predict_labels

    if data.task != metadata["task"]:
        raise ConfigError(f"the model does {metadata['task']} but the data is for {data.task}")
    if len(data.channel_names) != model.in_channels:
        raise DataError(f"data has {len(data.channel_names)} channels ({', '.join(data.channel_names)}), the model "
                        f"expects {model.in_channels}", path=data.path)
    indices = select_subjects(data, metadata, subjects)
    if len(indices) == 0:
        raise DataError("no subjects to evaluate", path=data.path)
    num_classes = int(metadata.get("num_classes") or model.num_classes)
    ids = [data.subject_ids[i] if data.subject_ids else f"#{i}" for i in indices]
    if data.task == "classification":
        from keras_ssl3d.data.pipeline import VolumeBatches

        batches = VolumeBatches(data.samples, batch_size=max(1, batch_size), shuffle=False, indices=indices)
        pred = np.asarray(model.predict(batches, verbose=0)).argmax(-1)
        true = np.asarray([data.samples.label(int(i)) for i in indices])
        return {
            "task": "classification",
            "num_subjects": int(len(indices)),
            "kappa": M.quadratic_weighted_kappa(true, pred, num_classes),
            "accuracy": M.accuracy(true, pred),
            "per_subject": [{"id": i, "true": int(t), "pred": int(p)} for i, t, p in zip(ids, true, pred)],
        }
    mapping = label_mapping(metadata)
    if data.label_mapping is not None and mapping is not None and data.label_mapping != mapping:
        raise DataError(f"data label mapping {data.label_mapping} differs from the model's {mapping}",
                        path=data.path)
    class_names = metadata.get("class_names") or [f"class_{k}" for k in range(num_classes)]
    regions = M.brats_regions(mapping) if M.is_brats_labels(mapping, class_names) else None
    size = model_size(metadata)
    # Generators: one subject in memory at a time, however large the data set. The data are served at
    # the model's input size, so each volume is one window.
    preds = (predict_labels(model, np.asarray(data.samples.image(int(i)), dtype=np.float32), window=(size,) * 3,
                            batch_size=batch_size) for i in indices)
    trues = (np.asarray(data.samples.label(int(i))) for i in indices)
    result = M.evaluate_segmentation(preds, trues, num_classes, class_names=class_names, regions=regions,
                                     spacings=subject_spacings(data.samples, indices))
    for row, sid in zip(result["per_subject"], ids):
        row["id"] = sid
    return {"task": "segmentation", "num_subjects": int(len(indices)), **result}


def format_table(result):
    """A plain-text table of an `evaluate_model` result."""
    lines = []
    if result["task"] == "classification":
        lines.append(f"{'subjects':<20}{result['num_subjects']:>10d}")
        lines.append(f"{'quadratic kappa':<20}{result['kappa']:>10.4f}")
        lines.append(f"{'accuracy':<20}{result['accuracy']:>10.4f}")
        return "\n".join(lines)
    lines.append(f"{'Dice':<32}{'mean':>8}   ({result['num_subjects']} subjects)")
    for name, value in result["per_class"].items():
        lines.append(f"{'  ' + name:<32}{value:>8.4f}")
    for name, value in (result.get("regions") or {}).items():
        lines.append(f"{'  ' + name:<32}{value:>8.4f}")
    lines.append(f"{'mean (no background)':<32}{result['mean_dice']:>8.4f}")
    if "hd95" in result:
        lines.append(f"{'Surface distance (mm)':<32}{'HD95':>8}{'MSD':>8}")
        for name in result["hd95"]:
            lines.append(f"{'  ' + name:<32}{result['hd95'][name]:>8.2f}{result['msd'][name]:>8.2f}")
        lines.append(f"{'mean':<32}{result['mean_hd95']:>8.2f}{result['mean_msd']:>8.2f}")
    return "\n".join(lines)


def resolve_inputs(inputs, channel_names):
    """Each INPUT (a NIfTI file, comma-separated files, or a subject folder) -> ``(name, [paths])``."""
    from keras_ssl3d.data.layouts import BRATS_ALIASES
    from keras_ssl3d.data.nifti import is_nifti, nifti_stem

    resolved = []
    for item in inputs:
        parts = [p for p in str(item).split(",") if p]
        if len(parts) > 1:
            paths = [Path(p) for p in parts]
            for p in paths:
                if not p.is_file():
                    raise DataError("input file does not exist", path=p)
            resolved.append((nifti_stem(paths[0]), paths))
            continue
        path = Path(parts[0]) if parts else Path(str(item))
        if path.is_file():
            if not is_nifti(path):
                raise DataError("not a NIfTI file (.nii or .nii.gz)", path=path)
            resolved.append((nifti_stem(path), [path]))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if is_nifti(p))
            paths = []
            for name in channel_names:
                # BraTS channels also match their other names (t1ce: t1c, as BraTS 2023 names them).
                names = BRATS_ALIASES.get(name.lower(), (name.lower(),))
                match = [p for p in files if nifti_stem(p).lower().endswith(tuple(s + n for n in names for s in "_-"))
                         or nifti_stem(p).lower() in names]
                if len(match) != 1:
                    raise DataError(f"expected one file for channel {name!r} (e.g. *_{name}.nii.gz), "
                                    f"found {len(match)}", path=path)
                paths.append(match[0])
            resolved.append((path.name, paths))
        else:
            raise DataError("input does not exist", path=path)
    return resolved


def predict_volume(model, metadata, paths, batch_size=1):
    """``(labels_ras in original label values, reference Volume)`` for one input.

    The scan is resized to the model's input grid (as its training data were: a model trained on
    whole scans at ``size``^3 would see another anatomy scale in windows of the native grid), so the
    model sees it in one window."""
    from keras_ssl3d.data import labels_to_original, load_volume, resize_volume, scale_intensity
    from keras_ssl3d.finetune.inference import predict_labels

    volume = load_volume(paths)
    if volume.num_channels != model.in_channels:
        names = metadata.get("channel_names") or []
        raise DataError(f"has {volume.num_channels} channel(s), the model expects {model.in_channels} "
                        f"({', '.join(names)})", path=paths[0])
    size = model_size(metadata)
    image = scale_intensity(resize_volume(volume.array, (size,) * 3), "minmax")
    pred = predict_labels(model, image.astype(np.float32), window=(size,) * 3, batch_size=batch_size)
    mapping = label_mapping(metadata)
    inverse = None if mapping is None else {v: k for k, v in mapping.items()}
    ras_shape = [int(n) for n in volume.array.shape[:3]]
    info = {"crop_bbox": [[0, n] for n in ras_shape], "ras_shape": ras_shape}
    return labels_to_original(pred, info, inverse), volume


# ---------------------------------------------------------------- where predictions go


def is_evaluation_file(path):
    """Whether ``path`` is a score file `evaluate --out` wrote (tagged with ``EVALUATION_TAG``)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and all(record.get(k) == v for k, v in EVALUATION_TAG.items())


def plan_predictions(inputs, items, out, overwrite=False, option="--overwrite"):
    """``[(target, paths)]`` for ``resolve_inputs``' ``items`` (one per INPUT of ``inputs``) into ``out``.

    Refused (one line, nothing written): two inputs that map to one output name, an output that is one of
    the inputs, and an existing file that no earlier `predict` recorded as its own (an own one only with
    ``overwrite``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("the prediction output exists and is not a folder", path=out)
    record = read_prediction_record(out)
    sources = {p.resolve() for _, paths in items for p in paths}
    seen = {}
    planned = []
    for spec, (name, paths) in zip(inputs, items):
        target = out / f"{name}{PREDICTION_SUFFIX}"
        if target.name in seen:
            raise ConfigError(f"inputs {seen[target.name]} and {spec} would both write {target}; "
                              "predict them into different --out folders")
        seen[target.name] = spec
        if target.resolve() in sources:
            raise OutputError(f"the prediction of {spec} would overwrite an input file; choose another --out",
                              path=target)
        if target.exists() or target.is_symlink():
            if not _recorded(record, target):
                raise OutputError("exists and was not written by keras-ssl3d predict; choose another --out "
                                  "(nothing was written)", path=target)
            if not overwrite:
                raise OutputError(f"holds an earlier prediction; pass {option} to replace it, or choose another "
                                  "--out", path=target)
        planned.append((target, paths))
    return planned


def read_prediction_record(out):
    """``{file name: sha256 or None}`` of the predictions written in ``out``; refuses a foreign record file."""
    path = Path(out) / PREDICTIONS_RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not (isinstance(record, dict) and record.get("written_by") == "keras-ssl3d predict"
            and isinstance(record.get("files"), dict)):
        raise OutputError("is not a record of keras-ssl3d predict; choose another --out", path=path)
    return record["files"]


def _recorded(record, target):
    """Whether ``target`` is a prediction this package wrote, unchanged since (a None hash: being written)."""
    from keras_ssl3d.presets.io import sha256_file

    if target.name not in record or target.is_symlink() or not target.is_file():
        return False
    return record[target.name] is None or record[target.name] == sha256_file(target)


def record_prediction(out, target, written):
    """Record ``target`` in ``out``'s prediction record: before writing (hash None) and once ``written``."""
    from keras_ssl3d.fileio import write_json_atomic
    from keras_ssl3d.presets.io import sha256_file

    files = read_prediction_record(out)
    files[Path(target).name] = sha256_file(target) if written else None
    write_json_atomic(Path(out) / PREDICTIONS_RECORD, {"written_by": "keras-ssl3d predict", "files": files})
