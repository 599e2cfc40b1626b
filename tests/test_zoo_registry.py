"""The zoo registry: manifests, recipes from the paper's appendix, status, cards, MODEL_CARDS.md, zoo CLI."""

import inspect
import json
from pathlib import Path

import pytest

from keras_ssl3d import Encoder3D, PresetError
from keras_ssl3d.presets import cards
from keras_ssl3d.presets import catalogue as registry

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"ukb": ["t1", "t2_flair"], "brats": ["t1", "t1ce", "t2", "flair"], "pancreas": ["ct"],
            "retina": ["red", "green", "blue"]}
TASKS = ("cpc", "rpl", "jigsaw", "rotation", "exemplar")
PAPER_PRESETS = [f"{d}-{t}" for d in DATASETS for t in TASKS]


def test_every_paper_preset_has_a_manifest():
    reg = registry.builtin_registry()
    assert set(PAPER_PRESETS) <= set(reg)
    assert {f"demo-brats-{t}" for t in TASKS} <= set(reg)
    for name in PAPER_PRESETS:
        entry = reg[name]
        ds = name.split("-")[0]
        m = entry.manifest
        assert entry.channel_names == DATASETS[ds]
        assert m["input_contract"]["in_channels"] == len(DATASETS[ds])
        assert m["architecture"]["config"]["in_channels"] == len(DATASETS[ds])
        assert entry.rank == (2 if ds == "retina" else 3)
        assert m["architecture"]["class_name"] == ("Encoder2D" if ds == "retina" else "Encoder3D")
        assert entry.repo_id == f"keras-ssl3d/{name}"
        assert entry.revision is None and entry.weights_sha256 is None  # nothing published yet: no fake hashes
        assert m["recipe"]["optimizer"] == "adam"
        assert m["recipe"]["learning_rate"] == (5e-4 if ds == "retina" else 1e-3)
        assert m["recipe"]["input_size"] == ([224, 224] if ds == "retina" else [128, 128, 128])
        assert m["input_contract"]["intensity_normalization"] == "per-channel min-max to [0, 1]"
        if entry.rank == 3:
            assert m["input_contract"]["orientation"] == "RAS"
            assert any("foreground" in step for step in m["recipe"]["preprocessing"])
        assert m["data"]["license"] and m["data"]["license_url"].startswith("https://")
        assert registry.entry_status(entry) == "recipe only"


def test_data_licences_are_stated_honestly():
    reg = registry.builtin_registry()
    assert "restricted" in reg["ukb-cpc"].manifest["data"]["license"]
    assert reg["pancreas-cpc"].manifest["data"]["license"] == "CC-BY-SA 4.0"
    assert reg["pancreas-cpc"].manifest["card"]["license"] == "cc-by-sa-4.0"
    assert "BraTS" in reg["brats-cpc"].manifest["data"]["license"]
    assert "Kaggle" in reg["retina-cpc"].manifest["data"]["license"]
    assert reg["demo-brats-cpc"].manifest["card"]["license"] == "apache-2.0"


def test_recipes_carry_the_appendix_hyperparameters():
    reg = registry.builtin_registry()
    for ds in ("ukb", "brats", "pancreas", "retina"):
        hp = {t: reg[f"{ds}-{t}"].recipe["task_hparams"] for t in TASKS}
        assert hp["cpc"]["code_size"] == 1024 and hp["exemplar"]["code_size"] == 1024
        assert hp["cpc"]["embedding_dim"] == hp["rpl"]["embedding_dim"] == hp["jigsaw"]["embedding_dim"] == 64
        assert hp["rpl"]["grid"] == hp["jigsaw"]["grid"] == 3
        assert hp["rpl"]["jitter"] == hp["jigsaw"]["jitter"] == 3
        assert hp["exemplar"]["margin"] == 1.0
        assert (hp["exemplar"]["rotation_p"], hp["exemplar"]["color_p"], hp["exemplar"]["zoom_p"]) == (0.5, 0.5, 0.2)
        if ds != "retina":
            assert hp["jigsaw"]["num_permutations"] == 1000
        # What the appendix does not state is recorded as unknown, not invented.
        recipe = reg[f"{ds}-cpc"].recipe
        assert recipe["epochs"] is None and recipe["batch_size"] is None and "not stated" in recipe["epochs_note"]


def test_task_hparams_are_task_constructor_arguments():
    tasks = pytest.importorskip("keras_ssl3d.tasks")
    for name, entry in registry.builtin_registry().items():
        cls = tasks.TASKS[entry.recipe["task"]]
        params = set(inspect.signature(cls.__init__).parameters)
        assert set(entry.recipe["task_hparams"]) <= params, name


def test_bad_manifests_are_rejected_with_the_file_named(tmp_path, monkeypatch):
    good = registry.builtin_registry()["brats-cpc"].manifest
    folder = tmp_path / "manifests"
    folder.mkdir()
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(folder))
    (folder / "x.json").write_text(json.dumps(dict(good, name="y")))
    with pytest.raises(PresetError, match="x.json: zoo manifest file name does not match"):
        registry.load_registry()
    (folder / "x.json").write_text("{not json")
    with pytest.raises(PresetError, match="x.json: zoo manifest is not valid JSON"):
        registry.load_registry()
    bad = dict(good, name="x", hub=dict(good["hub"], weights_sha256="abc"))
    (folder / "x.json").write_text(json.dumps(bad))
    with pytest.raises(PresetError, match="64 lower-case hex"):
        registry.load_registry()
    missing = {k: v for k, v in good.items() if k != "recipe"}
    (folder / "x.json").write_text(json.dumps(dict(missing, name="x")))
    with pytest.raises(PresetError, match="lacks recipe"):
        registry.load_registry()
    monkeypatch.setenv(registry.MANIFESTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(PresetError, match="does not exist"):
        registry.load_registry()


def test_unknown_preset_lists_close_names():
    with pytest.raises(PresetError, match=r"unknown preset 'brats-cpd': did you mean 'brats-cpc'"):
        Encoder3D.from_pretrained("brats-cpd")


def test_recipe_only_preset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path))
    with pytest.raises(PresetError) as err:
        Encoder3D.from_pretrained("ukb-rotation")
    msg = str(err.value)
    assert "not published yet" in msg and "keras-ssl3d zoo build ukb-rotation --data DIR" in msg
    assert "\n" not in msg


def test_local_build_folder_is_found_by_name(tmp_path, monkeypatch):
    from helpers import random_volumes, tiny_encoder3d, to_numpy

    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path))
    enc = tiny_encoder3d(2, filters=(8, 16), channel_names=["t1", "t2_flair"])
    enc.save_pretrained(registry.local_build_dir("ukb-rotation"), metadata={"zoo_name": "ukb-rotation"})
    assert registry.entry_status(registry.get_entry("ukb-rotation")) == "cached"
    loaded = Encoder3D.from_pretrained("ukb-rotation")
    x = random_volumes(1, 8, 2)
    assert (to_numpy(loaded(x)) == to_numpy(enc(x))).all()


def test_model_cards_md_is_fresh():
    """Regenerate with `keras-ssl3d zoo cards` when this fails."""
    current = (ROOT / "MODEL_CARDS.md").read_text(encoding="utf-8")
    assert current == cards.model_cards_markdown(), "MODEL_CARDS.md is stale: run `keras-ssl3d zoo cards`"
    for name in registry.builtin_registry():
        assert f"## {name}\n" in current


def test_hub_card_front_matter_for_a_zoo_preset():
    import yaml

    entry = registry.get_entry("pancreas-jigsaw")
    meta = {"class_name": "Encoder3D", "zoo_name": "pancreas-jigsaw", "parameter_count": 5,
            "input_contract": entry.input_contract, "weights_sha256": "a" * 64, "metrics": {"pretext_loss": 1.0},
            "token": "hf_should_not_appear"}
    text = cards.hub_model_card(meta, entry=entry, repo_id="org/pj")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "keras-ssl3d"
    assert {"keras-ssl3d", "self-supervised", "medical-imaging", "3d", "jigsaw"} <= set(front["tags"])
    assert front["license"] == "cc-by-sa-4.0"
    assert front["datasets"] == ["msd-pancreas"]
    assert front["metrics"] == ["dice", "pretext_loss"]
    assert "hf://org/pj" in text and "in_channels=1" in text
    assert "hf_should_not_appear" not in text
    retina = cards.card_front_matter({}, registry.get_entry("retina-rotation"))
    assert "2d" in retina["tags"] and retina["license"] == "other" and retina["license_name"]


def _cli(args, capsys):
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli

    code = run_cli(cli, args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_zoo_list_shows_every_preset_with_status(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path))
    code, out, _ = _cli(["zoo", "list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "RANK", "TASK", "CHANNELS", "STATUS", "HUB"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(registry.load_registry())
    assert "recipe only" in rows["brats-cpc"] and "t1,t1ce,t2,flair" in rows["brats-cpc"]
    code, out, _ = _cli(["zoo", "list", "--json"], capsys)
    statuses = {json.loads(line)["name"]: json.loads(line)["status"] for line in out.splitlines()}
    assert set(statuses.values()) <= set(registry.STATUSES)
    assert statuses["retina-cpc"] == "recipe only"


def test_zoo_info_and_errors(capsys):
    code, out, _ = _cli(["zoo", "info", "brats-jigsaw"], capsys)
    assert code == 0
    assert "## brats-jigsaw" in out and "num_permutations" in out and "t1, t1ce, t2, flair" in out
    assert "keras-ssl3d zoo build brats-jigsaw" in out
    code, _, err = _cli(["zoo", "info", "bratz-jigsaw"], capsys)
    assert code == 2 and err.startswith("Error: unknown preset 'bratz-jigsaw'") and "brats-jigsaw" in err


def test_zoo_cards_check_detects_staleness(tmp_path, capsys):
    target = tmp_path / "CARDS.md"
    assert _cli(["zoo", "cards", "--output", str(target), "--check"], capsys)[0] == 2
    assert _cli(["zoo", "cards", "--output", str(target)], capsys)[0] == 0
    assert _cli(["zoo", "cards", "--output", str(target), "--check"], capsys)[0] == 0
    target.write_text(target.read_text() + "edited\n")
    code, _, err = _cli(["zoo", "cards", "--output", str(target), "--check"], capsys)
    assert code == 2 and "stale" in err and err.startswith("Error: ")
