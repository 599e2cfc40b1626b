"""`zoo build` / `zoo download` and the bundled demo presets."""

import json

import keras
import numpy as np
import pytest
from helpers import random_volumes, to_numpy
from hub_server import hub_server  # noqa: F401  (fixture)

from keras_ssl3d import Encoder3D, PresetError
from keras_ssl3d.presets import read_metadata, sha256_file
from keras_ssl3d.presets import catalogue as registry

TOKEN = "hf_fake_write_token_123456"


def _cli(args, capsys):
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli

    code = run_cli(cli, args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _tiny_manifest(folder, name, task="rotation", **hub):
    """A registry entry with a tiny encoder, so the recipe can run in seconds."""
    manifest = json.loads(json.dumps(registry.builtin_registry()[f"brats-{task}"].manifest))
    manifest.update(name=name, title=f"tiny {task}")
    manifest["architecture"]["config"].update(filters=[8, 16])
    manifest["recipe"]["task_hparams"] = {"hidden_units": 16} if task == "rotation" else {}
    manifest["hub"] = {"repo_id": hub.get("repo_id"), "revision": hub.get("revision"),
                       "weights_sha256": hub.get("weights_sha256")}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(manifest))
    return folder


def test_zoo_build_runs_the_recipe_registers_and_pushes(hub_server, tmp_path, monkeypatch, capsys):
    pytest.importorskip("keras_ssl3d.tasks")
    from keras_ssl3d.data.synthetic import make_brats_like

    data = tmp_path / "brats"
    make_brats_like(data, n_subjects=4, shape=(20, 20, 20), seed=0)
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(_tiny_manifest(tmp_path / "manifests", "tiny-rotation")))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = _cli(["zoo", "build", "tiny-rotation", "--data", str(data), "--epochs", "1",
                           "--batch-size", "2", "--input-size", "16", "--run-dir", str(tmp_path / "run"),
                           "--push", "org/tiny-rotation"], capsys)
    assert code == 0, err
    built = registry.local_build_dir("tiny-rotation")
    assert f"registered tiny-rotation at {built}" in out and "pushed to org/tiny-rotation" in out
    meta = read_metadata(built)
    assert meta["zoo_name"] == "tiny-rotation" and meta["task"] == "rotation"
    assert meta["training"]["epochs"] == 1 and meta["training"]["samples"] == 4
    assert meta["input_contract"]["channel_names"] == ["t1", "t1ce", "t2", "flair"]
    assert "pretext_loss" in meta["metrics"] and np.isfinite(meta["metrics"]["pretext_loss"])
    assert (tmp_path / "run" / "run.json").is_file()  # a TrainingRun made it (resumable)
    # from_pretrained(NAME) now resolves to the local build; `zoo list` says cached.
    model = Encoder3D.from_pretrained("tiny-rotation")
    assert model.filters == (8, 16) and model.in_channels == 4
    code, out, _ = _cli(["zoo", "list", "--json"], capsys)
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert rows["tiny-rotation"]["status"] == "cached"
    # The pushed copy carries the zoo card and the same weights.
    files = hub_server.files("org/tiny-rotation")
    assert json.loads(files["metadata.json"])["weights_sha256"] == sha256_file(built / "model.weights.h5")
    assert "tiny rotation" in files["README.md"].decode()
    assert TOKEN not in files["README.md"].decode()


def test_zoo_build_rejects_data_with_the_wrong_channels(tmp_path, monkeypatch, capsys):
    pytest.importorskip("keras_ssl3d.tasks")
    from keras_ssl3d.data.synthetic import make_pancreas_like

    data = tmp_path / "pancreas"
    make_pancreas_like(data, n=2, shape=(16, 16, 16), seed=0)
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(_tiny_manifest(tmp_path / "manifests", "tiny-rotation")))
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path / "home"))
    code, _, err = _cli(["zoo", "build", "tiny-rotation", "--data", str(data), "--epochs", "1",
                         "--input-size", "16"], capsys)
    assert code == 2 and "expects 4 channels" in err and "have 1" in err
    assert not registry.local_build_dir("tiny-rotation").exists()


def test_zoo_download_verifies_and_prints_the_folder(hub_server, tmp_path, monkeypatch, capsys):
    keras.utils.set_random_seed(0)
    enc = Encoder3D(in_channels=4, filters=(8, 16))
    r = enc.push_to_hub("org/dl", token=TOKEN)
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(_tiny_manifest(
        tmp_path / "manifests", "tiny-dl", repo_id="org/dl", revision=r.commit_sha, weights_sha256=r.weights_sha256)))
    assert registry.entry_status(registry.get_entry("tiny-dl")) == "published"
    code, out, err = _cli(["zoo", "download", "tiny-dl"], capsys)
    assert code == 0, err
    folder = out.strip().splitlines()[-1]
    assert folder.endswith(r.commit_sha) and "models--org--dl" in folder
    code, out, _ = _cli(["zoo", "list", "--json"], capsys)
    status = {json.loads(line)["name"]: json.loads(line)["status"] for line in out.splitlines()}
    assert status["tiny-dl"] == "cached"
    code, _, err = _cli(["zoo", "download", "org/missing"], capsys)
    assert code == 2 and "not found" in err


def _bundled_demos():
    return [n for n, e in registry.builtin_registry().items() if e.manifest.get("bundled")]


@pytest.mark.parametrize("name", ["demo-brats-cpc", "demo-brats-rpl", "demo-brats-jigsaw", "demo-brats-rotation",
                                  "demo-brats-exemplar"])
def test_bundled_demo_presets_load_offline(name, monkeypatch):
    entry = registry.builtin_registry()[name]
    if entry.bundled_path is None:
        pytest.skip(f"{name} is not built yet (python -m keras_ssl3d.demo.bundled)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    folder = entry.bundled_path
    assert entry.bundled_sha256 == sha256_file(folder / "model.weights.h5")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 400_000
    assert registry.entry_status(entry) == "bundled"
    model = Encoder3D.from_pretrained(name, in_channels=4)  # the README's line
    x = random_volumes(1, 16, 4)
    y = to_numpy(model(x))
    assert y.shape == (1, 4, 4, 4, 32) and np.isfinite(y).all()
    two = Encoder3D.from_pretrained(name, channels=["t1", "flair"], adapt="by_name")
    assert two.in_channels == 2


def test_bundled_weights_are_checked_against_the_manifest(tmp_path, monkeypatch):
    import shutil

    names = [n for n in _bundled_demos() if registry.builtin_registry()[n].bundled_path is not None]
    if not names:
        pytest.skip("no demo preset built yet")
    entry = registry.builtin_registry()[names[0]]
    copy = tmp_path / "pkg" / "bundled" / names[0]
    shutil.copytree(entry.bundled_path, copy)
    manifest = dict(entry.manifest, bundled={"path": str(copy), "weights_sha256": "f" * 64})
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / f"{names[0]}.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(registry, "PACKAGE_DIR", tmp_path / "pkg")
    manifest["bundled"]["path"] = f"bundled/{names[0]}"
    (tmp_path / "m" / f"{names[0]}.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(tmp_path / "m"))
    with pytest.raises(PresetError, match="pinned registry value"):
        Encoder3D.from_pretrained(names[0])
