"""Publishing to and loading from the Hugging Face Hub, against the local fake hub (tests/hub_server.py).

The real ``huggingface_hub`` client talks HTTP to a server on 127.0.0.1. "New process" checks run
in subprocesses with HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE set before anything is imported.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import yaml
from helpers import random_volumes, tiny_encoder3d, to_numpy
from hub_server import hub_server  # noqa: F401  (fixture)

from keras_ssl3d import Encoder3D, PresetError
from keras_ssl3d.presets import sha256_file

TOKEN = "hf_fake_write_token_123456"  # the fake hub's write token (see the hub_server fixture)
FILTERS = (8, 16)  # first width != in_channels, so 2 -> 4 channel adaptation keeps the structure


def _encoder(seed=0):
    keras.utils.set_random_seed(seed)
    return tiny_encoder3d(2, filters=FILTERS, channel_names=["t1", "flair"])


def _push(enc, repo_id="org/enc", **kw):
    return enc.push_to_hub(repo_id, token=TOKEN, metadata={"task": "rotation"}, **kw)


def _front_matter(readme):
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _write_manifest(folder, name, repo_id, revision, sha):
    """A registry entry pointing at the fake hub (KERAS_SSL3D_ZOO_MANIFESTS)."""
    from keras_ssl3d.presets.catalogue import get_entry

    manifest = json.loads(json.dumps(get_entry("brats-rotation").manifest))
    manifest.update(name=name, title=f"test entry {name}")
    manifest["hub"] = {"repo_id": repo_id, "revision": revision, "weights_sha256": sha}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(manifest))
    return folder


def _run_py(code, env_extra, tmp_path, timeout=240):
    env = dict(os.environ)
    env.update(env_extra)
    env["KERAS_BACKEND"] = "tensorflow"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    script = tmp_path / f"script_{time.monotonic_ns()}.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def test_push_creates_repo_with_files_and_card(hub_server):
    enc = _encoder()
    result = _push(enc)
    files = hub_server.files("org/enc")
    assert {"config.json", "metadata.json", "model.weights.h5", "README.md"} <= set(files)
    meta = json.loads(files["metadata.json"])
    assert meta["weights_sha256"] == result.weights_sha256
    assert result.commit_sha == hub_server.repos["org/enc"].branches["main"]
    assert result.handle == f"hf://org/enc@{result.commit_sha}"
    front = _front_matter(files["README.md"].decode())
    assert front["library_name"] == "keras-ssl3d"
    assert {"keras-ssl3d", "self-supervised", "medical-imaging", "3d", "rotation"} <= set(front["tags"])
    assert front["license"]
    # The write calls carried the token; the README validation endpoint was used.
    writes = [r for r in hub_server.requests if r[0] == "POST"]
    assert any(p == "/api/validate-yaml" for _, p, _ in writes)
    assert all(auth for _, p, auth in writes if "/commit/" in p or "/preupload/" in p)


def test_push_without_valid_token_is_refused(hub_server, monkeypatch):
    enc = _encoder()
    with pytest.raises(PresetError, match="refused to write") as err:
        enc.push_to_hub("org/enc", token="hf_wrong_token_abcdef")
    assert "hf_wrong_token_abcdef" not in str(err.value)
    assert "org/enc" not in hub_server.repos


def test_new_process_loads_pushed_revisions_and_zoo_names(hub_server, tmp_path):
    """Push v1 (main) and v2 (branch), then load them in fresh processes, online and offline."""
    x = random_volumes(2, 8, 2)
    enc1, enc2 = _encoder(0), _encoder(1)
    r1 = _push(enc1)
    r2 = _push(enc2, revision="v2")
    assert hub_server.repos["org/enc"].branches["v2"] == r2.commit_sha != r1.commit_sha
    assert hub_server.repos["org/enc"].branches["main"] == r1.commit_sha  # the branch did not move main
    ref1, ref2 = to_numpy(enc1(x)), to_numpy(enc2(x))
    assert np.abs(ref1 - ref2).max() > 1e-3
    np.savez(tmp_path / "io.npz", x=x, ref1=ref1, ref2=ref2)
    manifests = _write_manifest(tmp_path / "manifests", "test-enc", "org/enc", r1.commit_sha, r1.weights_sha256)
    env = {"HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf_home"),
           "KERAS_SSL3D_HOME": str(tmp_path / "ssl3d_home"), "KERAS_SSL3D_ZOO_MANIFESTS": str(manifests),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "IO": str(tmp_path / "io.npz"), "SHA1": r1.commit_sha}

    online = _run_py("""
        import json, os, numpy as np
        from keras_ssl3d import Encoder3D
        d = np.load(os.environ["IO"])
        x, ref1, ref2 = d["x"], d["ref1"], d["ref2"]
        diff = lambda m, xx, ref: float(np.abs(np.asarray(m(xx)) - ref).max())
        out = {}
        m = Encoder3D.from_pretrained("hf://org/enc")
        out["main"] = diff(m, x, ref1)
        m4 = Encoder3D.from_pretrained("hf://org/enc", in_channels=4)
        out["in_channels"] = m4.in_channels
        out["adapted"] = diff(m4, np.concatenate([x, x], -1), ref1)
        out["v2"] = diff(Encoder3D.from_pretrained("org/enc@v2"), x, ref2)
        out["v2_kw"] = diff(Encoder3D.from_pretrained("org/enc", revision="v2"), x, ref2)
        out["sha"] = diff(Encoder3D.from_pretrained("hf://org/enc@" + os.environ["SHA1"]), x, ref1)
        out["zoo"] = diff(Encoder3D.from_pretrained("test-enc"), x, ref1)
        out["zoo_adapted"] = diff(Encoder3D.from_pretrained("test-enc", in_channels=4), np.concatenate([x, x], -1), ref1)
        print("RESULT " + json.dumps(out))
    """, env, tmp_path)
    assert online.returncode == 0, online.stderr[-3000:]
    out = json.loads(online.stdout.split("RESULT ", 1)[1])
    assert out["main"] == 0.0 and out["v2"] == 0.0 and out["v2_kw"] == 0.0 and out["sha"] == 0.0
    assert out["zoo"] == 0.0
    assert out["in_channels"] == 4
    assert out["adapted"] < 1e-5 and out["zoo_adapted"] < 1e-5

    env_offline = dict(env, HF_HUB_OFFLINE="1")
    offline = _run_py("""
        import json, os, numpy as np
        from keras_ssl3d import Encoder3D, PresetError
        d = np.load(os.environ["IO"])
        out = {}
        out["main"] = float(np.abs(np.asarray(Encoder3D.from_pretrained("hf://org/enc")(d["x"])) - d["ref1"]).max())
        out["v2"] = float(np.abs(np.asarray(Encoder3D.from_pretrained("org/enc@v2")(d["x"])) - d["ref2"]).max())
        out["zoo"] = float(np.abs(np.asarray(Encoder3D.from_pretrained("test-enc")(d["x"])) - d["ref1"]).max())
        try:
            Encoder3D.from_pretrained("hf://org/never-downloaded")
        except PresetError as e:
            out["error"] = str(e)
        print("RESULT " + json.dumps(out))
    """, env_offline, tmp_path)
    assert offline.returncode == 0, offline.stderr[-3000:]
    out = json.loads(offline.stdout.split("RESULT ", 1)[1])
    assert out["main"] == 0.0 and out["v2"] == 0.0 and out["zoo"] == 0.0
    error = out["error"]
    assert "not in the local cache" in error and "HF_HUB_OFFLINE=1" in error and "HF_ENDPOINT" in error
    assert "\n" not in error


def test_offline_zoo_name_not_cached_gives_one_clear_error(hub_server, tmp_path, monkeypatch):
    r1 = _push(_encoder())
    manifests = _write_manifest(tmp_path / "manifests", "test-enc", "org/enc", r1.commit_sha, r1.weights_sha256)
    monkeypatch.setenv("KERAS_SSL3D_ZOO_MANIFESTS", str(manifests))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PresetError) as err:
        Encoder3D.from_pretrained("test-enc")
    msg = str(err.value)
    assert "test-enc" in msg and "not in the local cache" in msg
    assert "keras-ssl3d zoo build test-enc --data DIR" in msg and "HF_ENDPOINT" in msg


def test_unreachable_hub_gives_one_clear_error_quickly(hub_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(PresetError) as err:
        Encoder3D.from_pretrained("hf://org/enc")
    elapsed = time.monotonic() - start
    msg = str(err.value)
    assert "cannot be reached" in msg and "http://127.0.0.1:9" in msg and "connect to the internet" in msg
    assert elapsed < 20  # one failed request, not the client's retry loop (about 25 s)


def test_cached_preset_is_used_when_hub_goes_away(hub_server, monkeypatch):
    enc = _encoder()
    _push(enc)
    x = random_volumes(1, 8, 2)
    first = Encoder3D.from_pretrained("hf://org/enc")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    again = Encoder3D.from_pretrained("hf://org/enc")
    np.testing.assert_array_equal(to_numpy(again(x)), to_numpy(first(x)))


def test_cache_dir_is_respected(hub_server, tmp_path):
    enc = _encoder()
    _push(enc)
    model = Encoder3D.from_pretrained("hf://org/enc", cache_dir=tmp_path / "my_cache")
    snapshots = list((tmp_path / "my_cache" / "models--org--enc" / "snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "model.weights.h5").is_file()
    assert not (tmp_path / "hf_home" / "hub" / "models--org--enc").exists()
    x = random_volumes(1, 8, 2)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(enc(x)))


def test_missing_repo_revision_and_file_errors(hub_server):
    _push(_encoder())
    with pytest.raises(PresetError, match="'org/nope' not found on http://127.0.0.1"):
        Encoder3D.from_pretrained("hf://org/nope")
    with pytest.raises(PresetError, match="revision 'nobranch' does not exist"):
        Encoder3D.from_pretrained("org/enc@nobranch")
    hub_server.create_repo("org/readme-only")
    hub_server.put_files("org/readme-only", {"README.md": b"# nothing\n"})
    with pytest.raises(PresetError, match="is not a keras-ssl3d preset: it lacks one of"):
        Encoder3D.from_pretrained("hf://org/readme-only")


def test_tampered_weights_are_refused(hub_server, tmp_path, monkeypatch):
    enc = _encoder()
    r = _push(enc)
    # 1. Tampered on the hub: new weights bytes under the old metadata.
    other = _encoder(5)
    other.save_weights(str(tmp_path / "other.weights.h5"))
    hub_server.put_files("org/enc", {"model.weights.h5": (tmp_path / "other.weights.h5").read_bytes()},
                         branch="main", summary="tamper")
    with pytest.raises(PresetError, match="does not match the preset metadata"):
        Encoder3D.from_pretrained("hf://org/enc")
    # 2. Tampered in the local cache.
    from keras_ssl3d.presets.download import download_preset

    snap = download_preset("org/enc", r.commit_sha)
    weights = snap / "model.weights.h5"
    Encoder3D.from_pretrained(f"hf://org/enc@{r.commit_sha}")  # intact: loads
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(PresetError, match="corrupted or was tampered with"):
        Encoder3D.from_pretrained(f"hf://org/enc@{r.commit_sha}")
    # 3. A registry entry pinning a different sha256 refuses even self-consistent files.
    manifests = _write_manifest(tmp_path / "m", "test-pinned", "org/enc", r.commit_sha, "0" * 64)
    monkeypatch.setenv("KERAS_SSL3D_ZOO_MANIFESTS", str(manifests))
    data[-100] ^= 0xFF  # restore the original bytes
    blob.write_bytes(bytes(data))
    assert sha256_file(weights) == r.weights_sha256
    with pytest.raises(PresetError, match="pinned registry value"):
        Encoder3D.from_pretrained("test-pinned")


def test_private_repo_needs_token(hub_server, monkeypatch):
    enc = _encoder()
    _push(enc, repo_id="org/private-enc", private=True)
    assert hub_server.repos["org/private-enc"].private
    with pytest.raises(PresetError, match="set HF_TOKEN or pass token=") as err:
        Encoder3D.from_pretrained("hf://org/private-enc")
    assert TOKEN not in str(err.value)
    model = Encoder3D.from_pretrained("hf://org/private-enc", token=TOKEN)
    x = random_volumes(1, 8, 2)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(enc(x)))
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # read by huggingface_hub at call time
    from_env = Encoder3D.from_pretrained("hf://org/private-enc", revision="main")
    np.testing.assert_array_equal(to_numpy(from_env(x)), to_numpy(enc(x)))


@pytest.mark.parametrize("handle", [
    "hf://../etc", "org/../x", "hf://org/..", "org/na me", "org\\name", "hf://org/name/extra", "org//name",
    "brats-cpc@../../x", "org/name@", "org/name@a@b", "hf:///abs/name", "org/name@/abs", "org/name@a/../b",
    "BRATS CPC", "org/-name", "hf://org",
])
def test_handles_that_could_escape_are_refused(handle, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be requested anyway
    with pytest.raises(PresetError):
        Encoder3D.from_pretrained(handle)


def test_revision_given_twice_must_agree():
    with pytest.raises(PresetError, match="names revision 'a' but revision='b'"):
        Encoder3D.from_pretrained("org/name@a", revision="b")


def test_cli_push_never_prints_or_logs_the_token(hub_server, tmp_path, monkeypatch, capfd, caplog):
    from keras_ssl3d.cli.errors import run_cli
    from keras_ssl3d.cli.main import cli

    enc = _encoder()
    enc.save_pretrained(tmp_path / "preset", metadata={"task": "rotation", "description": "a test preset"})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG)
    try:
        assert run_cli(cli, ["push", str(tmp_path / "preset"), "org/cli-enc", "--revision", "dev"]) == 0
        monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_abcdef")
        assert run_cli(cli, ["push", str(tmp_path / "preset"), "org/cli-enc"]) == 2
    finally:
        logging.getLogger("huggingface_hub").setLevel(logging.WARNING)
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "pushed" in captured.out and "org/cli-enc" in captured.out
    assert "Error: the hub at" in captured.err and "refused to write" in captured.err
    for secret in (TOKEN, "hf_wrong_token_abcdef"):
        assert secret not in text
        for content in hub_server.files("org/cli-enc", "dev").values():
            assert secret.encode() not in content
    assert "dev" in hub_server.repos["org/cli-enc"].branches
    assert set(hub_server.files("org/cli-enc", "dev")) >= {"README.md", "model.weights.h5"}


def test_push_refuses_a_corrupted_preset_folder(hub_server, tmp_path):
    enc = _encoder()
    folder = enc.save_pretrained(tmp_path / "preset")
    data = bytearray((folder / "model.weights.h5").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.weights.h5").write_bytes(bytes(data))
    from keras_ssl3d.zoo import push_preset_folder

    with pytest.raises(PresetError, match="tampered"):
        push_preset_folder(folder, "org/x", token=TOKEN)
    assert "org/x" not in hub_server.repos
