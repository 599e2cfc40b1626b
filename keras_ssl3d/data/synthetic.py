"""Built-in synthetic data that looks enough like the real thing for demos and tests.

Everything is deterministic by ``seed`` (subject ``i`` depends only on ``(seed, i)``), vectorised
numpy, and written as real files in the real layouts so the real readers are exercised:

- ``make_brats_like``: four MR modalities (t1, t1ce, t2, flair) of a skull-stripped brain with
  CSF / grey / white matter of modality-specific contrast, a smooth bias field and noise, and a
  tumour whose oedema (2), necrotic / non-enhancing core (1) and enhancing rim (4) look as they do
  in BraTS: oedema bright on FLAIR and T2, enhancing rim bright on T1ce, necrosis dark on T1ce;
- ``make_pancreas_like``: one-channel abdominal CT in Hounsfield units with pancreas (1) and
  tumour (2) labels, Medical Segmentation Decathlon layout (``dataset.json``);
- ``make_fundus_like``: RGB fundus photographs with 5 retinopathy grades whose lesion counts
  grow with the grade, PNG files plus ``labels.csv``.
"""

import csv
from pathlib import Path

import numpy as np

from keras_ssl3d.data.nifti import save_volume
from keras_ssl3d.data.arrays import resize_volume
from keras_ssl3d.fileio import atomic_path, write_json_atomic

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
# LPS voxel axes as in the BraTS files (the x and y axes point left and posterior).
BRATS_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])

# Mean intensity per tissue: background, CSF, grey matter, white matter, oedema, enhancing, necrotic.
_TISSUE_CONTRAST = {
    "t1": [0.0, 0.25, 0.55, 0.80, 0.45, 0.60, 0.30],
    "t1ce": [0.0, 0.25, 0.55, 0.80, 0.45, 1.00, 0.18],
    "t2": [0.0, 1.00, 0.60, 0.40, 0.85, 0.65, 0.95],
    "flair": [0.0, 0.15, 0.60, 0.45, 0.95, 0.75, 0.55],
}
_TISSUE_LABEL = np.array([0, 0, 0, 0, 2, 4, 1], dtype=np.uint8)


def _rng(seed, i):
    return np.random.default_rng([int(seed), int(i)])


def _grid(shape):
    """Normalised coordinates in [-1, 1] along each axis, as broadcastable arrays."""
    return [np.linspace(-1, 1, n, dtype=np.float32).reshape([-1 if a == k else 1 for a in range(3)])
            for k, n in enumerate(shape)]


def _smooth_field(rng, shape, grid=4):
    """A smooth random field (unit-ish std): coarse Gaussian noise upsampled trilinearly."""
    coarse = rng.standard_normal((grid, grid, grid)).astype(np.float32)
    return resize_volume(coarse, shape)


def _blur(a):
    """3-voxel box blur along each spatial axis: partial-volume edges, cheap."""
    a = a.astype(np.float32, copy=True)
    for axis in range(3):
        p = np.pad(a, [(1, 1) if k == axis else (0, 0) for k in range(a.ndim)], mode="edge")
        sl = [slice(None)] * a.ndim
        parts = []
        for start in range(3):
            sl[axis] = slice(start, start + a.shape[axis])
            parts.append(p[tuple(sl)])
        a = (parts[0] + parts[1] + parts[2]) / 3.0
    return a


def brats_like_subject(shape=(64, 64, 48), seed=0, index=0):
    """One BraTS-like subject: ``(image (X, Y, Z, 4) float32 in [0, 1], labels (X, Y, Z) uint8)``."""
    rng = _rng(seed, index)
    shape = tuple(int(s) for s in shape)
    x, y, z = _grid(shape)
    # Brain: a deformed, rotated ellipsoid of varying size.
    cx, cy, cz = rng.uniform(-0.05, 0.05, 3)
    ax, ay, az = rng.uniform([0.72, 0.80, 0.72], [0.88, 0.92, 0.88])
    t = rng.uniform(-0.2, 0.2)
    xr = (x - cx) * np.cos(t) - (y - cy) * np.sin(t)
    yr = (x - cx) * np.sin(t) + (y - cy) * np.cos(t)
    zr = z - cz
    r = np.sqrt((xr / ax) ** 2 + (yr / ay) ** 2 + (zr / az) ** 2)
    r = r * (1 + 0.04 * _smooth_field(rng, shape, 4))
    folds = 0.05 * np.sin(rng.uniform(10, 16) * np.arctan2(yr, xr)) * np.cos(rng.uniform(6, 10) * zr)
    tissue = np.zeros(shape, dtype=np.int8)
    tissue[r < 1.0] = 1                       # CSF rim
    tissue[r < 0.92 + folds] = 2              # cortex
    tissue[r < 0.70 + folds] = 3              # white matter
    # Lateral ventricles: two small ellipsoids of random size near the centre.
    vs = rng.uniform(0.06, 0.12)
    for side in (-1, 1):
        v = ((xr - side * 0.12) / vs) ** 2 + ((yr - 0.05) / (2.5 * vs)) ** 2 + ((zr - 0.1) / (1.5 * vs)) ** 2
        tissue[v < 1] = 1
    brain = tissue > 0
    # Tumour: somewhere in the hemispheres, irregular nested shells.
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    tc = np.array([cx, cy, cz]) + direction * rng.uniform(0.25, 0.45) * np.array([ax, ay, az])
    d = np.sqrt((x - tc[0]) ** 2 + (y - tc[1]) ** 2 + (z - tc[2]) ** 2)
    r_oedema = rng.uniform(0.25, 0.40)
    r_enh = r_oedema * rng.uniform(0.5, 0.7)
    r_nec = r_enh * rng.uniform(0.5, 0.75)
    d_core = d * (1 + 0.2 * _smooth_field(rng, shape, 5))
    d_oed = d * (1 + 0.35 * _smooth_field(rng, shape, 5))
    tissue[(d_oed < r_oedema) & brain] = 4
    tissue[(d_core < r_enh) & brain] = 5
    tissue[(d_core < r_nec) & brain] = 6
    labels = _TISSUE_LABEL[tissue]

    channels = []
    for m in BRATS_MODALITIES:
        contrast = np.asarray(_TISSUE_CONTRAST[m], dtype=np.float32) * rng.uniform(0.95, 1.05, 7).astype(np.float32)
        img = contrast[tissue]
        img = img * (1 + 0.05 * _smooth_field(rng, shape, 8))      # tissue texture
        img = _blur(img)
        img *= np.exp(0.15 * _smooth_field(rng, shape, 3))          # bias field
        img += rng.normal(0, 0.03, shape).astype(np.float32)
        img = np.clip(img, 0, None) * brain                         # skull-stripped: background 0
        channels.append(img.astype(np.float32))
    image = np.stack(channels, axis=-1)
    image /= image.max(axis=(0, 1, 2), keepdims=True)
    return image, labels


def brats_like_arrays(n=4, shape=(64, 64, 48), seed=0):
    """``n`` BraTS-like subjects in memory: ``(images (n, X, Y, Z, 4), labels (n, X, Y, Z))``.

    Labels use BraTS values 0, 1, 2, 4.
    """
    pairs = [brats_like_subject(shape, seed, i) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_brats_like(out_dir, n_subjects=20, shape=(64, 64, 48), seed=0, prefix="BraTS_Synth", with_labels=True):
    """Write ``n_subjects`` BraTS-like subjects in the BraTS folder layout; returns ``out_dir``.

    ``out_dir/<id>/<id>_{t1,t1ce,t2,flair}.nii.gz`` (int16, LPS affine as in BraTS) and, unless
    ``with_labels`` is false (an unlabelled pool), ``<id>_seg.nii.gz`` (labels 0, 1, 2, 4).
    """
    out_dir = Path(out_dir)
    for i in range(n_subjects):
        image, labels = brats_like_subject(shape, seed, i)
        rng = _rng(seed, 10_000 + i)
        sid = f"{prefix}_{i + 1:03d}"
        sdir = out_dir / sid
        for c, m in enumerate(BRATS_MODALITIES):
            scale = rng.uniform(600, 1500)
            save_volume(np.rint(image[..., c] * scale).astype(np.int16), BRATS_AFFINE, sdir / f"{sid}_{m}.nii.gz")
        if with_labels:
            save_volume(labels.astype(np.uint8), BRATS_AFFINE, sdir / f"{sid}_seg.nii.gz")
    return out_dir


def make_msd_brain_like(out_dir, n_subjects=4, shape=(48, 48, 32), seed=0):
    """Task01_BrainTumour-like MSD folder: 4D images (FLAIR, T1w, t1gd, T2w) and labels 0..3."""
    out_dir = Path(out_dir)
    order = ["flair", "t1", "t1ce", "t2"]
    msd_labels = np.array([0, 2, 1, 0, 3], dtype=np.uint8)  # BraTS 1 -> 2, 2 -> 1, 4 -> 3
    training = []
    for i in range(n_subjects):
        image, labels = brats_like_subject(shape, seed, i)
        name = f"BRATS_{i + 1:03d}.nii.gz"
        chans = np.stack([image[..., BRATS_MODALITIES.index(m)] for m in order], axis=-1) * 1000
        save_volume(chans.astype(np.float32), np.eye(4), out_dir / "imagesTr" / name)
        save_volume(msd_labels[labels], np.eye(4), out_dir / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "BRATS", "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": n_subjects, "numTest": 0, "training": training, "test": [],
    }
    write_json_atomic(out_dir / "dataset.json", meta)
    return out_dir


# ---------------------------------------------------------------- pancreas-like CT


def pancreas_like_subject(shape=(64, 64, 32), seed=0, index=0):
    """One abdominal CT: ``(hu (X, Y, Z, 1) float32, labels (X, Y, Z) uint8)``; 1 pancreas, 2 tumour.

    Portal-venous phase values, as in the MSD pancreas scans: enhancing pancreas (~110 HU) in a
    bed of fat, a hypodense tumour (~55 HU), liver, kidneys, spine, bowel gas.
    """
    rng = _rng(seed, index)
    shape = tuple(int(s) for s in shape)
    x, y, z = _grid(shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    bx, by = rng.uniform([0.80, 0.60], [0.92, 0.72])
    body = (x / bx) ** 2 + ((y + 0.05) / by) ** 2 + 0 * z
    hu[body < 1] = -100.0                               # subcutaneous fat
    hu[body < 0.8] = 50.0                               # soft tissue / muscle
    liver = ((x + 0.35) / 0.35) ** 2 + ((y - 0.05) / 0.35) ** 2 + (z / 0.9) ** 2
    hu[liver < 1] = 120.0 + rng.uniform(-10, 10)
    for side in (-1, 1):
        k = ((x - side * 0.35) / 0.12) ** 2 + ((y + 0.35) / 0.15) ** 2 + (z / 0.5) ** 2
        hu[k < 1] = 180.0
    spine = (x / 0.12) ** 2 + ((y + 0.5) / 0.12) ** 2 + 0 * z
    hu[spine < 1] = 500.0
    for _ in range(rng.integers(3, 7)):               # bowel gas
        g = rng.uniform([-0.5, -0.1, -0.8], [0.5, 0.45, 0.8])
        s = rng.uniform(0.04, 0.09)
        hu[((x - g[0]) ** 2 + (y - g[1]) ** 2 + (z - g[2]) ** 2) < s ** 2] = -900.0
    # Pancreas: a curved tube across the abdomen, varied thickness and position.
    y0 = rng.uniform(-0.1, 0.05)
    curve = y0 + 0.12 * np.sin(2.2 * x + rng.uniform(-0.5, 0.5))
    thick = rng.uniform(0.09, 0.13) * (1.2 - 0.4 * (x + 1) / 2)
    zc = rng.uniform(-0.2, 0.2)
    zlen = rng.uniform(0.25, 0.4)
    pancreas = (np.abs(y - curve) < thick) & (np.abs(x - 0.1) < 0.45) & (np.abs(z - zc) < zlen)
    # Peripancreatic fat: the pancreas lies in a bed of fat, which is what makes it visible on CT.
    fat = (np.abs(y - curve) < 1.7 * thick) & (np.abs(x - 0.1) < 0.55) & (np.abs(z - zc) < zlen + 0.1)
    hu[fat] = -90.0
    labels = np.zeros(shape, dtype=np.uint8)
    hu[pancreas] = 110.0 + rng.uniform(-10, 10)
    labels[pancreas] = 1
    if rng.random() < 0.8:
        tx = rng.uniform(-0.25, 0.4)
        ty = y0 + 0.12 * np.sin(2.2 * tx)
        tr = rng.uniform(0.09, 0.14)
        d = ((x - tx) ** 2 + (y - ty) ** 2 + ((z - zc) / 1.5) ** 2) * (1 + 0.3 * _smooth_field(rng, shape, 4))
        tumour = (d < tr ** 2) & (body < 0.8)
        hu[tumour] = 55.0 + rng.uniform(-10, 10)
        labels[tumour] = 2
    hu = 0.6 * hu + 0.4 * _blur(hu)                    # mild partial-volume edges
    hu += rng.normal(0, 15.0, shape).astype(np.float32)
    return hu[..., None].astype(np.float32), labels


def pancreas_like_arrays(n=4, shape=(64, 64, 32), seed=0):
    pairs = [pancreas_like_subject(shape, seed, i) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_pancreas_like(out_dir, n=10, shape=(64, 64, 32), seed=0, n_test=0, spacing=(0.8, 0.8, 2.5)):
    """Write a Task07_Pancreas-like MSD folder (``dataset.json``, ``imagesTr``, ``labelsTr``,
    ``imagesTs``) of int16 CT in Hounsfield units; returns ``out_dir``."""
    out_dir = Path(out_dir)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    training, test = [], []
    for i in range(n + n_test):
        hu, labels = pancreas_like_subject(shape, seed, i)
        name = f"pancreas_{i + 1:03d}.nii.gz"
        folder = "imagesTr" if i < n else "imagesTs"
        save_volume(np.rint(hu[..., 0]).astype(np.int16), affine, out_dir / folder / name)
        if i < n:
            save_volume(labels, affine, out_dir / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "Pancreas", "description": "Synthetic pancreas-like CT (keras-ssl3d)", "tensorImageSize": "3D",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
        "numTraining": n, "numTest": n_test, "training": training, "test": test,
    }
    write_json_atomic(out_dir / "dataset.json", meta)
    return out_dir


# ---------------------------------------------------------------- fundus-like 2D


def fundus_like_image(size=224, grade=0, seed=0, index=0):
    """One RGB fundus-like image (``(S, S, 3)`` uint8); lesion counts grow with ``grade`` (0..4)."""
    rng = _rng(seed, index)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size, dtype=np.float32), np.linspace(-1, 1, size, dtype=np.float32),
                         indexing="ij")
    r = np.sqrt(xx ** 2 + yy ** 2)
    base = np.array([0.78, 0.36, 0.16], dtype=np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    illum = 1 - 0.45 * r ** 2 + 0.08 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    img = base[None, None, :] * illum[..., None]
    side = rng.choice([-1, 1])
    dx, dy = side * rng.uniform(0.3, 0.45), rng.uniform(-0.1, 0.1)
    # Macula: darker spot on the other side of the disc.
    mac = np.exp(-(((xx + side * 0.25) ** 2 + (yy - dy) ** 2) / 0.02))
    img *= (1 - 0.35 * mac)[..., None]
    # Vessels: curves leaving the disc, in polar coordinates around it.
    rho = np.sqrt((xx - dx) ** 2 + (yy - dy) ** 2)
    phi = np.arctan2(yy - dy, xx - dx)
    vessels = np.zeros_like(r)
    n_vessels = 8 + (4 if grade == 4 else 0)  # grade 4: proliferative, extra new vessels
    for k in range(n_vessels):
        phi0 = rng.uniform(-np.pi, np.pi)
        bend = rng.uniform(-1.2, 1.2)
        wig = rng.uniform(0.1, 0.4) if k < 8 else 1.0
        path = phi0 + bend * rho + wig * np.sin(5 * rho + k)
        dphi = np.angle(np.exp(1j * (phi - path)))
        width = (0.018 if k < 8 else 0.006) * np.clip(1.3 - rho, 0.3, 1.3)
        vessels = np.maximum(vessels, np.exp(-((dphi * rho) ** 2) / (2 * width ** 2)) * (rho > 0.08))
    img *= (1 - 0.45 * vessels)[..., None]
    disc = np.exp(-(rho ** 2) / (2 * 0.07 ** 2))
    img = img * (1 - disc[..., None]) + np.array([1.0, 0.9, 0.62], dtype=np.float32) * disc[..., None]

    def blobs(count, radius, colour, strength):
        nonlocal img
        for _ in range(count):
            p = rng.uniform(-0.7, 0.7, 2)
            rad = rng.uniform(*radius)
            g = np.exp(-(((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * rad ** 2)))[..., None] * strength
            img = img * (1 - g) + np.asarray(colour, dtype=np.float32) * g

    grade = int(grade)
    blobs(rng.poisson(5 * grade) if grade else 0, (0.008, 0.015), (0.35, 0.05, 0.05), 0.9)        # microaneurysms
    blobs(rng.poisson(4 * max(0, grade - 1)), (0.015, 0.03), (0.95, 0.85, 0.35), 0.85)              # exudates
    blobs(rng.poisson(3 * max(0, grade - 2)), (0.03, 0.06), (0.30, 0.04, 0.04), 0.8)                # haemorrhages
    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    img *= (r < 0.96)[..., None]                                        # circular field of view
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def fundus_grades(n, seed=0):
    """Balanced grades 0..4 in a seed-determined order."""
    return np.random.default_rng([int(seed), 99]).permutation(np.arange(n) % 5)


def fundus_like_arrays(n=10, size=64, seed=0):
    """``(images (n, S, S, 3) float32 in [0, 1], grades (n,) int)`` in memory."""
    grades = fundus_grades(n, seed)
    images = np.stack([fundus_like_image(size, g, seed, i) for i, g in enumerate(grades)])
    return images.astype(np.float32) / 255.0, grades.astype(np.int64)


def make_fundus_like(out_dir, n=50, size=224, seed=0):
    """Write ``n`` fundus-like PNGs and ``labels.csv`` (``image,grade``); returns ``out_dir``."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grades = fundus_grades(n, seed)
    rows = []
    for i, g in enumerate(grades):
        name = f"fundus_{i + 1:04d}.png"
        with atomic_path(out_dir / name) as tmp:
            Image.fromarray(fundus_like_image(size, g, seed, i)).save(tmp, format="PNG")
        rows.append((name, int(g)))
    with atomic_path(out_dir / "labels.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image", "grade"])
            w.writerows(rows)
    return out_dir


__all__ = [
    "brats_like_arrays", "brats_like_subject", "fundus_like_arrays", "fundus_like_image", "make_brats_like",
    "make_fundus_like", "make_msd_brain_like", "make_pancreas_like", "pancreas_like_arrays",
    "pancreas_like_subject",
]
