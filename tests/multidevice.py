"""Checks on 2 logical CPU devices, run by tests/test_distribute.py in their own process.

Run with ``KERAS_SSL3D_CPU_DEVICES=2`` and a ``KERAS_BACKEND``: the logical devices must exist
before the backend starts.

``python tests/multidevice.py step [TASK ...]``: one training step of each 3D task on 2 replicas vs
on one device. One JSON line per task with the largest difference between the weights after the
replicated step and a single-device reference: ``full`` (one step on the whole batch of 2B samples)
and, for tasks whose loss takes negatives from the batch, ``halves`` (the mean of the updates of the
two halves: per-replica negatives). Plain SGD makes the update linear in the gradient, so both
references are exact up to float32 rounding.

``python tests/multidevice.py cli WORKDIR``: `pretrain` and `finetune` with ``--distribute mirrored
--devices 2``, each resumed (pretrain on 1 device), in one process; prints the run.json records.
"""

import json
import sys
from pathlib import Path

from keras_ssl3d import distribute  # first: it hands KERAS_SSL3D_CPU_DEVICES to XLA before JAX loads

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_ssl3d.models import Encoder3D  # noqa: E402
from keras_ssl3d.tasks import CPC, RPL, Exemplar, Jigsaw, Rotation  # noqa: E402

PER_DEVICE = 2
LEARNING_RATE = 0.1


def build(name):
    encoder = Encoder3D(in_channels=1, filters=(4, 8), norm="group")  # no per-replica batch statistics
    if name == "rotation":
        return Rotation(encoder, hidden_units=16), 12
    if name == "rpl":
        return RPL(encoder, input_size=24, hidden_units=16), 24
    if name == "jigsaw":
        return Jigsaw(encoder, input_size=24, num_permutations=10, hidden_units=16), 24
    if name == "cpc":
        return CPC(encoder, input_size=24, jitter=1, code_size=16), 24
    return Exemplar(encoder, code_size=16, hidden_units=16), 12


def step(name, weights, x, y):
    """Weights after one SGD step on ``(x, y)`` from ``weights`` (in the active distribution scope)."""
    model, _ = build(name)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    model.set_weights(weights)
    model.fit(x, y, batch_size=len(keras.tree.flatten(y)[0]), epochs=1, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]


def part(structure, s):
    return keras.tree.map_structure(lambda a: a[s], structure)


def main_step(names):
    plan = distribute.plan("mirrored", devices=2)
    assert plan.replicas == 2, plan
    for name in names:
        keras.utils.set_random_seed(0)
        model, size = build(name)
        rng = np.random.default_rng(0)
        samples = rng.random((2 * PER_DEVICE, size, size, size, 1)).astype(np.float32)
        x, y = model.transform(samples, np.random.default_rng(1))
        start = [np.asarray(w) for w in model.get_weights()]  # a functional task model is built
        full = step(name, start, x, y)
        first, second = slice(0, PER_DEVICE), slice(PER_DEVICE, None)
        references = {"full": full}
        if model.uses_batch_negatives:
            halves = [step(name, start, part(x, first), part(y, first)),
                      step(name, start, part(x, second), part(y, second))]
            references["halves"] = [(a + b) / 2 for a, b in zip(*halves)]
        with plan.scope():
            replicated = step(name, start, x, y)
        diff = {ref: float(max(np.max(np.abs(a - b)) for a, b in zip(replicated, other)))
                for ref, other in references.items()}
        update = float(max(np.max(np.abs(a - b)) for a, b in zip(full, start)))
        print(json.dumps({"task": name, "backend": keras.backend.backend(), "replicas": plan.replicas,
                          "strategy": plan.kind, "max_diff": diff, "max_update": update}), flush=True)


def main_cli(workdir):
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli
    from keras_ssl3d.data.synthetic import make_brats_like

    work = Path(workdir)
    data = make_brats_like(work / "brats", n_subjects=5, shape=(18, 18, 16), seed=0)
    pre = ["pretrain", "--task", "rotation", "--data", str(data), "--out", str(work / "pre"), "--size", "16",
           "--filters", "4,8", "--norm", "group", "--batch-size", "1"]
    fine = ["finetune", "--data", str(data), "--encoder", str(work / "pre"), "--out", str(work / "fine"),
            "--size", "16", "--batch-size", "1", "--strategy", "full", "--verbose", "0"]
    calls = [
        [*pre, "--epochs", "1", "--distribute", "mirrored", "--devices", "2"],
        [*pre, "--epochs", "2", "--distribute", "mirrored", "--devices", "1", "--resume"],  # fewer devices
        [*fine, "--epochs", "1", "--distribute", "mirrored", "--devices", "2"],
        [*fine, "--epochs", "2", "--distribute", "mirrored", "--devices", "2", "--resume"],
    ]
    for args in calls:
        code = run_cli(cli, args=args)
        run = work / ("pre" if args[0] == "pretrain" else "fine")
        record = json.loads((run / "run.json").read_text())
        history = (run / "history.csv").read_text().strip().splitlines()
        print(json.dumps({"command": args[0], "code": code, "epochs_done": len(history) - 1,
                          "distribution": record["config"].get("distribution"),
                          "resumed": len(record.get("resumed", []))}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        main_cli(sys.argv[2])
    else:
        main_step(sys.argv[2:] or ["rotation", "rpl", "jigsaw", "cpc", "exemplar"])
