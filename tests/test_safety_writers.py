"""Every command that writes, pointed at a folder of the user's files (and at its own input folder): no user
file changes (contents and mtime), and the command either refuses in one line (exit status 2) or writes only
new files. A refusal leaves nothing behind that blocks a rerun.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import refused_in_one_line
from hub_server import hub_server  # noqa: F401  (fixture)
from test_cli_hardening import FILTERS, SID, _leftovers, assets  # noqa: F401  (fixture)

from keras_ssl3d import Encoder3D
from keras_ssl3d.cli.errors import run_cli
from keras_ssl3d.cli.main import cli
from keras_ssl3d.errors import OutputError

TOKEN = "hf_fake_write_token_123456"  # the fake hub's write token (tests/hub_server.py)


def make_user_folder(path):
    """A researcher's project: irreplaceable files, two of them with names the package also uses."""
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("\\chapter{Results}\n")
    (path / "notes.txt").write_text("do not lose\n")
    (path / "config.json").write_text('{"my": "settings"}\n')
    (path / "metadata.json").write_text('{"owner": "me"}\n')
    (path / "data").mkdir()
    (path / "data" / "scan.nii.gz").write_bytes(np.random.default_rng(0).bytes(2048))
    return path


def snapshot(root):
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``root``."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_untouched(before, root):
    after = snapshot(root)
    changed = [name for name, state in before.items() if after.get(name) != state]
    assert changed == [], f"user files changed or deleted: {changed}"
    return sorted(set(after) - set(before))  # what the command added


def refused(argv, capsys, named):
    """Run a command that must refuse: exit status 2, one line naming ``named``; returns (and prints) the line."""
    line = refused_in_one_line(argv, capsys, named)
    print(line)
    return line


@pytest.fixture
def user(tmp_path):
    folder = make_user_folder(tmp_path / "myproject")
    return folder, snapshot(folder)


@pytest.fixture
def data(assets, tmp_path):  # noqa: F811
    folder = tmp_path / "brats"
    shutil.copytree(assets / "clean", folder)
    return folder, snapshot(folder)


def _pretrain(data_dir, out):
    return ["pretrain", "--task", "rotation", "--data", str(data_dir), "--out", str(out), "--size", "8",
            "--filters", FILTERS, "--epochs", "1", "--batch-size", "2"]


def _finetune(data_dir, out):
    return ["finetune", "--data", str(data_dir), "--encoder", "none", "--out", str(out), "--size", "8",
            "--filters", FILTERS, "--epochs", "1", "--batch-size", "2"]


def _study(data_dir, out):
    return ["study", "--data", str(data_dir), "--encoders", "none", "--fractions", "1", "--repeats", "1",
            "--out", str(out), "--size", "8", "--filters", FILTERS, "--epochs", "1", "--batch-size", "2"]


# A writer pointed at a folder of the user's files (or at its own input folder) is refused, naming it.
COMMANDS = {
    "preprocess": lambda a, d, u: ["preprocess", str(d), str(u), "--size", "8", "--quiet"],
    "preprocess_into_its_input": lambda a, d, u: ["preprocess", str(d), str(d), "--size", "8", "--quiet"],
    "pretrain": lambda a, d, u: _pretrain(d, u),
    "pretrain_into_its_input": lambda a, d, u: _pretrain(d, d),
    "finetune": lambda a, d, u: _finetune(d, u),
    "finetune_into_its_input": lambda a, d, u: _finetune(d, d),
    "study": lambda a, d, u: _study(d, u),
    "study_into_its_input": lambda a, d, u: _study(d, d),
    "evaluate_over_a_user_file": lambda a, d, u: ["evaluate", "--model", str(a / "model"), "--data", str(d),
                                                  "--out", str(u / "notes.txt")],
    "evaluate_over_its_input": lambda a, d, u: ["evaluate", "--model", str(a / "model"), "--data", str(d),
                                                "--out", str(d / SID / f"{SID}_seg.nii.gz")],
    "export_saved_model": lambda a, d, u: ["export", str(a / "encoder"), str(u)],
    "export_tfhub_over_a_user_file": lambda a, d, u: ["export", str(a / "encoder"), str(u / "thesis.tex"),
                                                      "--format", "tfhub-tgz", "--overwrite"],
    "export_overwrite_user_folder": lambda a, d, u: ["export", str(a / "encoder"), str(u), "--overwrite"],
    "demo": lambda a, d, u: ["demo", "--out", str(u), "--quick", "--overwrite"],
    "demo_into_data": lambda a, d, u: ["demo", "--out", str(d)],
    "zoo_cards_over_a_user_file": lambda a, d, u: ["zoo", "cards", "--output", str(u / "notes.txt")],
}
NAMED = {"evaluate_over_a_user_file": "notes.txt", "evaluate_over_its_input": f"{SID}/{SID}_seg.nii.gz",
         "export_tfhub_over_a_user_file": "thesis.tex", "zoo_cards_over_a_user_file": "notes.txt"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_writer_refuses_a_folder_of_user_files(name, assets, data, user, tmp_path, capsys):  # noqa: F811
    (data_dir, data_before), (folder, user_before) = data, user
    argv = COMMANDS[name](assets, data_dir, folder)
    into_input = name.endswith(("_into_its_input", "_into_data", "_over_its_input"))
    target = data_dir if into_input else folder
    line = refused(argv, capsys, target / NAMED[name] if name in NAMED else target)
    assert "keras-ssl3d" in line  # says whose output it looked for
    assert assert_untouched(user_before, folder) == []
    assert assert_untouched(data_before, data_dir) == []
    assert _leftovers(tmp_path) == []
    # Nothing written beside it either (a data cache would be a new folder): the parent holds what it held.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brats", "myproject"]


def test_refusals_print_these_lines(assets, data, user, capsys):  # noqa: F811
    """The exact messages (the README and the issue's closing note quote them)."""
    (data_dir, _), (folder, _) = data, user
    line = refused(["export", str(assets / "encoder"), str(folder)], capsys, folder)
    assert line == (f"Error: {folder}: the folder is not empty and holds no SavedModel export written "
                    "by keras-ssl3d; choose a new or empty folder (nothing was written)")
    line = refused(_pretrain(data_dir, folder), capsys, folder)
    assert line == (f"Error: {folder}: the folder is not empty and holds no training run written by keras-ssl3d; "
                    "choose a new or empty folder (nothing was written)")


def test_save_pretrained_never_deletes_user_files(user, tmp_path):
    folder, before = user
    encoder = Encoder3D(in_channels=1, filters=(4,))
    with pytest.raises(OutputError, match="not empty and holds no preset written by keras-ssl3d") as e:
        encoder.save_pretrained(folder)
    assert str(folder) in str(e.value) and len(str(e.value).splitlines()) == 1
    assert assert_untouched(before, folder) == []
    # An earlier preset is replaced; the same preset folder with a file of the user's in it is not.
    preset = encoder.save_pretrained(tmp_path / "preset")
    encoder.save_pretrained(preset)
    (preset / "README.md").write_text("my notes on this preset\n")
    kept = snapshot(preset)
    with pytest.raises(OutputError, match="also 'README.md', which keras-ssl3d did not write"):
        encoder.save_pretrained(preset)
    assert assert_untouched(kept, preset) == []
    assert _leftovers(tmp_path) == []


def test_predict_into_the_subject_folder_keeps_the_ground_truth(assets, data, capsys):  # noqa: F811
    data_dir, before = data
    subject = data_dir / SID
    argv = ["predict", "--model", str(assets / "model"), str(subject), "--out", str(subject)]
    assert run_cli(cli, argv) == 0, capsys.readouterr()
    added = assert_untouched(before, data_dir)
    assert added == [f"{SID}/{SID}_pred.nii.gz", f"{SID}/keras-ssl3d-predictions.json"]
    # Again: refused (an earlier prediction), then replaced with --overwrite; the label map never changes.
    line = refused(argv, capsys, subject / f"{SID}_pred.nii.gz")
    assert "holds an earlier prediction; pass --overwrite to replace it" in line
    assert run_cli(cli, [*argv, "--overwrite"]) == 0
    assert assert_untouched(before, data_dir) == added


def test_predict_writes_only_new_files_and_never_over_a_file_it_did_not_write(assets, data, user, capsys):  # noqa: F811
    (data_dir, _), (folder, before) = data, user
    model = str(assets / "model")
    assert run_cli(cli, ["predict", "--model", model, str(data_dir / SID), "--out", str(folder)]) == 0
    assert assert_untouched(before, folder) == [f"{SID}_pred.nii.gz", "keras-ssl3d-predictions.json"]
    # A file of the user's with a prediction's name is never replaced, not even with --overwrite.
    other = "BraTS_Synth_002"
    (folder / f"{other}_pred.nii.gz").write_bytes(b"my corrected segmentation")
    before = snapshot(folder)
    line = refused(["predict", "--model", model, str(data_dir / other), "--out", str(folder), "--overwrite"],
                   capsys, folder / f"{other}_pred.nii.gz")
    assert "exists and was not written by keras-ssl3d predict" in line
    # A prediction the user edited afterwards is the user's now.
    (folder / f"{SID}_pred.nii.gz").write_bytes(b"edited by hand")
    before = snapshot(folder)
    refused(["predict", "--model", model, str(data_dir / SID), "--out", str(folder), "--overwrite"], capsys,
            folder / f"{SID}_pred.nii.gz")
    assert assert_untouched(before, folder) == []


def test_predict_refuses_two_inputs_with_one_output_name_and_an_input_as_output(assets, data, tmp_path, capsys):  # noqa: F811
    data_dir, before = data
    model = str(assets / "model")
    twin = tmp_path / "other" / SID
    shutil.copytree(data_dir / SID, twin)
    line = refused(["predict", "--model", model, str(data_dir / SID), str(twin), "--out", str(tmp_path / "p")],
                   capsys, data_dir / SID)
    assert str(twin) in line and "would both write" in line
    # An input named like a prediction: its prediction name is new, but an input given as the output is refused.
    t1 = data_dir / SID / f"{SID}_t1.nii.gz"
    renamed = tmp_path / "in" / "case_pred.nii.gz"
    renamed.parent.mkdir()
    shutil.copy(t1, tmp_path / "in" / "case.nii.gz")
    shutil.copy(t1, renamed)
    # (a one-channel input does not fit this 4-channel model: the output names are checked first)
    line = refused(["predict", "--model", model, str(tmp_path / "in" / "case.nii.gz"), str(renamed), "--out",
                    str(tmp_path / "in")], capsys, renamed)
    assert "would overwrite an input file" in line
    assert not (tmp_path / "p").exists()
    assert assert_untouched(before, data_dir) == []


def test_export_replaces_only_its_own_earlier_export(assets, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sm"
    enc = str(assets / "encoder")
    assert run_cli(cli, ["export", enc, str(out)]) == 0
    assert (out / "saved_model.pb").is_file() and (out / ".keras-ssl3d-export").is_file()
    line = refused(["export", enc, str(out)], capsys, out)
    assert "holds an earlier SavedModel export; pass --overwrite to replace it" in line
    assert run_cli(cli, ["export", enc, str(out), "--overwrite"]) == 0
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    line = refused(["export", enc, str(out), "--overwrite"], capsys, out)
    assert "also 'notes.txt', which keras-ssl3d did not write" in line
    assert assert_untouched(before, out) == []
    # The compressed module: its first member marks it, so an earlier archive is replaced with --overwrite.
    archive = tmp_path / "module.tar.gz"
    assert run_cli(cli, ["export", enc, str(archive), "--format", "tfhub-tgz"]) == 0
    with tarfile.open(archive) as tar:
        assert tar.next().name == ".keras-ssl3d-export" and "saved_model.pb" in tar.getnames()
    refused(["export", enc, str(archive), "--format", "tfhub-tgz"], capsys, archive)
    assert run_cli(cli, ["export", enc, str(archive), "--format", "tfhub-tgz", "--overwrite"]) == 0
    assert _leftovers(tmp_path) == []


def test_a_refused_command_does_not_block_a_rerun(assets, data, user, tmp_path, capsys):  # noqa: F811
    (data_dir, _), (folder, before) = data, user
    refused(_pretrain(data_dir, folder), capsys, folder)
    refused(["preprocess", str(data_dir), str(folder), "--size", "8", "--quiet"], capsys, folder)
    assert assert_untouched(before, folder) == []
    assert run_cli(cli, ["preprocess", str(data_dir), str(tmp_path / "cache"), "--size", "8", "--quiet"]) == 0
    assert run_cli(cli, _pretrain(tmp_path / "cache", tmp_path / "run")) == 0
    assert (tmp_path / "run" / "encoder" / "metadata.json").is_file()
    # Our own outputs are recognised: the cache is reused, the run is resumed rather than refused.
    assert run_cli(cli, ["preprocess", str(data_dir), str(tmp_path / "cache"), "--size", "8", "--quiet"]) == 0
    assert "already done" in capsys.readouterr().out


def test_demo_refuses_a_previous_demo_holding_a_user_file(tmp_path):
    from keras_ssl3d.demo.runner import MARKER, prepare_output

    out = prepare_output(tmp_path / "demo")
    (out / "report.md").write_text("an earlier report\n")
    with pytest.raises(OutputError, match="holds an earlier demo; pass --overwrite"):
        prepare_output(out)
    (out / "my_notes.md").write_text("mine\n")
    before = snapshot(out)
    with pytest.raises(OutputError, match="also 'my_notes.md', which keras-ssl3d did not write"):
        prepare_output(out, overwrite=True)
    assert assert_untouched(before, out) == []
    (out / "my_notes.md").unlink()
    prepare_output(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_push_and_download_write_only_new_files(hub_server, user, tmp_path, monkeypatch, capsys):  # noqa: F811
    """Push stages in a private temporary folder; a download into a user's folder adds its cache beside."""
    folder, before = user
    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    keras.utils.set_random_seed(0)
    encoder = Encoder3D(in_channels=1, filters=(4,))
    result = encoder.push_to_hub("org/enc", token=TOKEN, metadata={"task": "rotation"})
    assert list(staging.iterdir()) == []  # the staging folder is gone
    # `push` of a folder that is not a preset reads it and refuses, changing nothing.
    refused(["push", str(folder), "org/other"], capsys, folder)
    code = run_cli(cli, ["zoo", "download", "hf://org/enc", "--revision", result.commit_sha, "--cache-dir", str(folder)])
    assert code == 0, capsys.readouterr()
    added = assert_untouched(before, folder)
    assert added and all(name.startswith(("models--org--enc/", ".locks/")) or name == "CACHEDIR.TAG"
                         for name in added), added


@pytest.mark.parametrize("fmt", ["saved_model", "tfhub-tgz"])
def test_export_on_a_full_disk(assets, tmp_path, fmt):  # noqa: F811
    """A file-size limit (``ulimit -f``, as a full disk would) mid-export: one line naming the path and saying
    the disk is full, nothing half-written, the earlier export intact."""
    out = tmp_path / ("module.tar.gz" if fmt == "tfhub-tgz" else "sm")
    enc = str(assets / "encoder")
    assert run_cli(cli, ["export", enc, str(out), "--format", fmt]) == 0
    before = snapshot(out.parent)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = (f"ulimit -f 8; trap '' XFSZ; exec {sys.executable} -m keras_ssl3d.cli.main export {enc} {out} "
               f"--format {fmt} --overwrite")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ") or "Traceback" in line]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and str(out) in lines[0], proc.stderr[-3000:]
    assert "file-size limit" in lines[0] or "disk is full" in lines[0], lines[0]
    print(lines[0])
    assert assert_untouched(before, out.parent) == []  # the earlier export intact, nothing added
    assert _leftovers(tmp_path) == []


def test_export_when_the_disk_fills_up(assets, tmp_path, monkeypatch, capsys):  # noqa: F811
    """ENOSPC while the archive is written (in-process): one line naming it, the earlier archive intact."""
    import errno

    from keras_ssl3d.zoo import export

    archive = tmp_path / "module.tar.gz"
    enc = str(assets / "encoder")
    assert run_cli(cli, ["export", enc, str(archive), "--format", "tfhub-tgz"]) == 0
    before = snapshot(tmp_path)

    def no_space(folder, target, marker=False):
        Path(target).write_bytes(b"half an archive")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(export, "write_tgz", no_space)
    line = refused(["export", enc, str(archive), "--format", "tfhub-tgz", "--overwrite"], capsys, archive)
    assert line == (f"Error: {archive}: cannot write, the disk is full (No space left on device); free some space "
                    "and run the command again")
    assert assert_untouched(before, tmp_path) == []
    assert _leftovers(tmp_path) == []
