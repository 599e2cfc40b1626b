"""Where a fine-tuning epoch's time goes: ``run_finetune`` at demo scale, split into its phases.

``python benchmarks/finetune_epoch.py LABEL tb|none EPOCHS ['{"checkpoint_seconds": 60}']``: synthetic
BraTS-like data (8 subjects, 32^3), encoder none (8-16-32), batch 2, full strategy, validation 1/4;
prints the whole run, the first (compiling) epoch and, per later epoch, the training steps, validation,
checkpoint writes, history.csv, TensorBoard, the gap before the first batch (tf.data iterator, workers)
and the rest (Keras's epoch end, callbacks). Hand-measured; see BENCHMARKS.md.
"""

import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
from keras_ssl3d.data import pipeline
from keras_ssl3d.data.synthetic import make_brats_like
from keras_ssl3d.data.labelled import load_task_data
from keras_ssl3d.finetune.runner import FinetuneSettings, run_finetune
from keras_ssl3d.training import checkpoint as ckpt
from keras_ssl3d.training import run as runmod

CUR = [0]
T = collections.defaultdict(float)  # (epoch, phase) -> seconds


def timed(obj, name, key):
    orig = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            T[CUR[0], key] += time.perf_counter() - t
    setattr(obj, name, wrapper)


timed(ckpt, "save_checkpoint", "checkpoint")
timed(runmod.TrainingRun, "write_history", "history.csv")
timed(pipeline.VolumeBatches, "__getitem__", "batch reads (worker threads, overlapped)")
timed(keras.callbacks.TensorBoard, "on_epoch_end", "tensorboard")


class Phase(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None):
        CUR[0] = e
        self.t0 = time.perf_counter()
        self.first = None

    def on_train_batch_begin(self, b, logs=None):
        if self.first is None:
            self.first = time.perf_counter()
            T[CUR[0], "epoch start -> 1st batch (iterator, workers)"] += self.first - self.t0
        self.tb = time.perf_counter()

    def on_train_batch_end(self, b, logs=None):
        T[CUR[0], "training steps"] += time.perf_counter() - self.tb

    def on_test_begin(self, logs=None):
        self.tv = time.perf_counter()

    def on_test_end(self, logs=None):
        T[CUR[0], "validation"] += time.perf_counter() - self.tv


MARKS = []
orig_fit = runmod.TrainingRun.fit


def fit(self, model, x=None, epochs=1, callbacks=None, **kw):
    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(s, e, logs=None):
            MARKS.append(time.perf_counter())

        def on_train_end(s, logs=None):
            MARKS.append(time.perf_counter())
    return orig_fit(self, model, x, epochs, callbacks=[Marks(), Phase(), *(callbacks or [])], **kw)


runmod.TrainingRun.fit = fit
label, tb, epochs = sys.argv[1], sys.argv[2] == "tb", int(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
tmp = Path(tempfile.mkdtemp())
make_brats_like(tmp / "data", n_subjects=8, shape=(40, 40, 32), seed=0)
data = load_task_data(tmp / "data", size=32, task="segmentation", cache_root=tmp)
s = FinetuneSettings(encoder="none", filters=(8, 16, 32), epochs=epochs, batch_size=2, lr=1e-3, strategy="full",
                     val_fraction=0.25, **extra)
t0 = time.perf_counter()
run_finetune(data, s, tmp / "run", tensorboard=(tmp / "run" / "tensorboard") if tb else None, verbose=0)
total = time.perf_counter() - t0
walls = [b - a for a, b in zip(MARKS, MARKS[1:])]
later = walls[1:]
print(f"== {label}: tensorboard={tb} epochs={epochs} {extra}")
print(f"   whole run_finetune {total:.1f} s; epoch 1 (compile) {walls[0]:.2f} s; "
      f"epochs 2..{epochs}: {sum(later) / len(later):.3f} s/epoch")
keys = sorted({k for _, k in T})
acc = 0.0
for k in keys:
    v = sum(T[e, k] for e in range(1, epochs)) / len(later)
    if "overlapped" not in k:
        acc += v
    print(f"   {k:45s} {v:.3f} s/epoch")
print(f"   {'rest (Keras epoch end, callbacks, logs)':45s} {sum(later) / len(later) - acc:.3f} s/epoch")
shutil.rmtree(tmp, ignore_errors=True)
