"""Model cards: the Hub ``README.md`` of a pushed preset, ``zoo info`` text and ``MODEL_CARDS.md``.

Everything is generated from the preset's ``metadata.json`` and, when the preset names a zoo
entry (``metadata["zoo_name"]``), the registry manifest. Output is deterministic (no dates) so
``MODEL_CARDS.md`` can be checked for staleness. Tokens never reach a card: only the keys
listed below are read from metadata.
"""

import json

import yaml

from keras_ssl3d.presets.catalogue import builtin_registry

LIBRARY_NAME = "keras-ssl3d"
BASE_TAGS = ["keras-ssl3d", "keras", "self-supervised", "medical-imaging"]
PAPER = "Taleb et al., 3D Self-Supervised Methods for Medical Imaging, NeurIPS 2020"
PAPER_URL = "https://arxiv.org/abs/2006.03829"
MODEL_CARDS_COMMAND = "keras-ssl3d zoo cards"


# -- Hub README ------------------------------------------------------------------------------------
def card_front_matter(metadata, entry=None):
    """The YAML metadata block of a Hub model card, as a dict."""
    manifest = entry.manifest if entry is not None else {}
    card = manifest.get("card", {})
    contract = metadata.get("input_contract") or manifest.get("input_contract") or {}
    rank = contract.get("rank") or manifest.get("rank") or 3
    task = (metadata.get("task") or (manifest.get("recipe") or {}).get("task"))
    tags = list(BASE_TAGS) + ["3d" if rank == 3 else "2d"]
    for tag in list(card.get("tags", [])) + ([task] if task else []) + list(metadata.get("tags") or []):
        tag = str(tag).strip().lower()
        if tag and tag not in tags:
            tags.append(tag)
    license_id = metadata.get("license") or card.get("license") or "other"
    front = {"library_name": LIBRARY_NAME, "tags": tags, "license": license_id}
    license_name = metadata.get("license_name") or card.get("license_name")
    if license_id == "other":
        front["license_name"] = license_name or "see-model-card"
        link = metadata.get("license_link") or (manifest.get("data") or {}).get("license_url")
        if link:
            front["license_link"] = link
    datasets = metadata.get("datasets") or card.get("datasets")
    if not datasets and metadata.get("dataset"):
        datasets = [str(metadata["dataset"])]
    if datasets:
        front["datasets"] = [str(d) for d in datasets]
    metrics = list(card.get("metrics", []))
    measured = metadata.get("metrics")
    if isinstance(measured, dict):
        metrics += [m for m in measured if m not in metrics]
    elif isinstance(measured, list):
        metrics += [str(m) for m in measured if str(m) not in metrics]
    if metrics:
        front["metrics"] = metrics
    front["pipeline_tag"] = "image-feature-extraction"
    return front


def hub_model_card(metadata, entry=None, repo_id=None):
    """The README.md pushed with a preset: YAML front matter + a short description and usage."""
    front = card_front_matter(metadata, entry)
    manifest = entry.manifest if entry is not None else {}
    title = manifest.get("title") or metadata.get("title") or (repo_id or metadata.get("class_name", "Preset"))
    contract = metadata.get("input_contract") or {}
    in_channels = contract.get("in_channels")
    handle = f"hf://{repo_id}" if repo_id else (entry.name if entry is not None else "PATH")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    elif metadata.get("description"):
        lines += [str(metadata["description"]), ""]
    lines += [
        f"The `{metadata.get('class_name', 'Encoder3D')}` preset for [keras-ssl3d](https://huggingface.co/keras-ssl3d), "
        f"a Keras 3 implementation of {PAPER} ([paper]({PAPER_URL})).",
        "",
        "## Usage",
        "",
        "```python",
        f"from keras_ssl3d import {metadata.get('class_name', 'Encoder3D')}",
        "",
        f"encoder = {metadata.get('class_name', 'Encoder3D')}.from_pretrained({handle!r}"
        + (f", in_channels={in_channels})" if in_channels else ")"),
        "```",
        "",
        "`in_channels=` / `channels=` adapt the input layer to another number (or named list) of channels "
        "(the paper's duplication of the input-layer weights).",
        "",
        "## Preset",
        "",
        _table([
            ("class", metadata.get("class_name")),
            ("parameters", metadata.get("parameter_count")),
            ("weights sha256", f"`{metadata.get('weights_sha256')}`" if metadata.get("weights_sha256") else None),
            ("keras-ssl3d", metadata.get("keras_ssl3d_version")),
            ("keras", metadata.get("keras_version")),
            ("saved with backend", metadata.get("backend")),
            ("zoo name", metadata.get("zoo_name")),
            ("task", metadata.get("task")),
        ]),
        "",
        "## Input contract",
        "",
        _table([(k, _fmt(v)) for k, v in contract.items()]) if contract else "not recorded",
        "",
    ]
    recipe = metadata.get("recipe") or manifest.get("recipe")
    if recipe:
        lines += ["## Recipe", "", _recipe_table(recipe), ""]
    data = manifest.get("data")
    if data:
        lines += ["## Data and licence", "", _data_section(data), ""]
    extra = {k: metadata[k] for k in ("hyperparameters", "metrics", "training") if k in metadata}
    if extra:
        lines += ["## Training record", "", "```json", json.dumps(extra, indent=2, sort_keys=True), "```", ""]
    lines += ["## Citation", "", f"{PAPER}. {PAPER_URL}", ""]
    return "\n".join(lines)


# -- zoo info / MODEL_CARDS.md ---------------------------------------------------------------------
def entry_card(entry, status=None):
    """A registry entry as Markdown (``keras-ssl3d zoo info NAME`` and MODEL_CARDS.md)."""
    m = entry.manifest
    hub = m["hub"]
    contract = m["input_contract"]
    lines = [f"## {entry.name}", "", f"**{m['title']}** (version {m['version']})", "", m.get("description", ""), ""]
    rows = [("status", status), ("rank", f"{m['rank']}D"),
            ("architecture", f"`{m['architecture']['class_name']}` " + _fmt(m["architecture"].get("config", {}))),
            ("hub repo", f"`{hub.get('repo_id')}`" if hub.get("repo_id") else "none"),
            ("pinned revision", hub.get("revision") or "not published"),
            ("weights sha256", hub.get("weights_sha256") or "not published")]
    if m.get("bundled"):
        rows.append(("bundled folder", f"`keras_ssl3d/zoo/{m['bundled']['path']}`"))
        rows.append(("bundled weights sha256", m["bundled"].get("weights_sha256") or "not built yet"))
        pretext = m["bundled"].get("pretext")
        if pretext and pretext.get("held_out_accuracy") is not None:
            rows.append(("pretext accuracy (held-out subjects)",
                         f"{pretext['held_out_accuracy']:.3f} (chance {pretext['chance_accuracy']:.3f}) after "
                         f"{pretext['epochs']} epochs; training {pretext['train_accuracy']:.3f}"))
    lines += [_table([r for r in rows if r[1] is not None]), ""]
    lines += ["**Input contract**", "", _table([(k, _fmt(v)) for k, v in contract.items()]), ""]
    lines += ["**Recipe**", "", _recipe_table(m["recipe"]), ""]
    lines += ["**Data and licence**", "", _data_section(m["data"]), ""]
    down = m.get("downstream")
    if down:
        lines += [f"**Downstream use in the paper**: {down['task']} (metrics: {', '.join(down['metrics'])}).", ""]
    lines += ["**Load**", "", "```python",
              f"encoder = keras_ssl3d.{m['architecture']['class_name']}.from_pretrained({entry.name!r})"]
    if m["recipe"].get("pretrains_decoder"):
        lines += ["# the whole pretrained U-Net, with a fresh output layer for your classes:",
                  f"unet = keras_ssl3d.Segmenter3D.from_pretrained({entry.name!r}, num_classes=4)"]
    lines += ["```", ""]
    if not entry.published and not m.get("bundled"):
        lines += [f"Not published yet: `keras-ssl3d zoo build {entry.name} --data DIR [--push REPO_ID]` runs this "
                  "recipe on your copy of the data and registers the result locally.", ""]
    return "\n".join(lines)


def model_cards_markdown(registry=None):
    """The text of MODEL_CARDS.md: a status table and one card per built-in preset."""
    registry = registry if registry is not None else builtin_registry()
    lines = [
        "# keras-ssl3d model zoo",
        "",
        f"<!-- Generated by `{MODEL_CARDS_COMMAND}` from keras_ssl3d/zoo/manifests/*.json; do not edit by hand. -->",
        "",
        f"Presets re-implementing {PAPER}, and recipes for three newer methods on the same data (Models Genesis, "
        "MAE for 3D CNNs, SimCLR). Load any of them with `from_pretrained(NAME)`; "
        "`keras-ssl3d zoo list` shows their status on this machine (bundled / cached / published / recipe only).",
        "",
        "No pretrained weights were released with the paper. A preset whose status is *recipe only* carries the "
        "exact recipe, so anyone with the data can rebuild it with `keras-ssl3d zoo build NAME --data DIR` and "
        "publish it with `--push REPO_ID`. Demo presets are tiny encoders trained on synthetic data and shipped "
        "inside the package, so examples run offline.",
        "",
        "Outside Keras: `keras-ssl3d export NAME OUT [--format saved_model|tfhub-tgz]` writes a TF-Hub style "
        "reusable SavedModel. Load it with `m = tensorflow_hub.load(OUT)` (keep `m` referenced) or, inside a Keras 3 "
        "model, with `keras.layers.TFSMLayer(OUT, call_endpoint=\"serve\")` (TensorFlow backend). `hub.KerasLayer` "
        "is a tf-keras layer and cannot be placed in a Keras 3 model.",
        "",
        "| name | rank | task | data set | channels | status | hub repo |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in registry.items():
        m = entry.manifest
        lines.append(
            f"| [{name}](#{name}) | {m['rank']}D | {m['recipe']['task']} | {m['data']['dataset'].split(' (')[0]} | "
            f"{', '.join(m['input_contract']['channel_names'])} | {_static_status(entry)} | "
            f"{m['hub'].get('repo_id') or '-'} |"
        )
    lines.append("")
    for entry in registry.values():
        lines.append(entry_card(entry, status=_static_status(entry)))
    return "\n".join(lines).rstrip() + "\n"


def _static_status(entry):
    """Status independent of this machine's caches (for the committed MODEL_CARDS.md)."""
    if entry.manifest.get("bundled"):
        return "bundled"
    return "published" if entry.published else "recipe only"


# -- helpers ---------------------------------------------------------------------------------------
def _table(rows):
    out = ["| | |", "|---|---|"]
    for key, value in rows:
        if value is None:
            continue
        out.append(f"| {key} | {_cell(value)} |")
    return "\n".join(out)


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value):
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if all(not isinstance(v, (dict, list)) for v in value) \
            else json.dumps(value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if value is None:
        return "not stated"
    return str(value)


def _recipe_table(recipe):
    rows = []
    for key, value in recipe.items():
        if key == "task_hparams":
            for hk, hv in value.items():
                rows.append((f"task: {hk}", _fmt(hv)))
        elif key == "preprocessing" and isinstance(value, list):
            rows.append((key, "; ".join(value)))
        else:
            rows.append((key, _fmt(value)))
    return _table(rows)


def _data_section(data):
    rows = [("data set", data.get("dataset")), ("licence / terms", data.get("license")),
            ("terms link", data.get("license_url")), ("note", data.get("terms_note")),
            ("role in the paper", data.get("role_in_paper")), ("cite", data.get("citation"))]
    return _table([r for r in rows if r[1]])
