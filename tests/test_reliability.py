"""Crash safety, integrity checks and refused options."""
import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, assert_one_line_error, copy_run

import members.parallel
from ensemble import api
from ensemble.cli import main
from ensemble.core.errors import RunError
from ensemble.core.runfolder import RunFolder
from members.checkpoint import save_checkpoint


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fused_copy(tiny_run, subset_path, tmp_path_factory):
    """A copy of the tiny run with its argmax fuser fitted by ``ensemble fuse`` (which records its checksum)."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("reliability"))  # fusers other tests fitted stay
    result = cli("fuse", "--run", run, "--data", subset_path, "--strategy", "argmax")
    assert result.exit_code == 0, result.output
    return run


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_records_checksums(fused_copy):
    checksums = json.loads((fused_copy / "manifest.json").read_text())["checksums"]
    expected = {f"members/{name}/best.pt" for name in ("background", "soil", "bedrock", "sand", "big_rock")}
    expected |= {"baseline/best.pt", "fusion/argmax.pt"}
    assert expected <= set(checksums)
    for key, value in checksums.items():
        assert value == _sha256(fused_copy / key), key


def test_flipped_byte_in_member_is_named(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    path = run / "members" / "bedrock" / "best.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert_one_line_error(cli("fuse", "--run", run, "--data", subset_path), "bedrock/best.pt", "sha256")


def test_flipped_byte_in_fuser_is_named(fused_copy, subset_path, tmp_path):
    run = copy_run(fused_copy, tmp_path)
    path = run / "fusion" / "argmax.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "submission.csv"
    result = cli("predict", "--run", run, "--data", subset_path, "--strategy", "argmax", "--out", out, "--quiet")
    assert_one_line_error(result, "fusion/argmax.pt", "sha256")
    assert not out.exists()


@pytest.mark.parametrize("key, strategy", [("members/sand/best.pt", "argmax"), ("baseline/best.pt", "baseline"),
                                           ("fusion/argmax.pt", "argmax")])
def test_missing_manifest_entry_refused(fused_copy, subset_path, tmp_path, key, strategy):
    run = copy_run(fused_copy, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["checksums"].pop(key)
    (run / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "submission.csv"
    result = cli("predict", "--run", run, "--data", subset_path, "--strategy", strategy, "--out", out, "--quiet")
    assert_one_line_error(result, key, "manifest.json", "no sha256 recorded")
    assert not out.exists()
    # a network that has not finished (no metrics.json saying so) needs no entry yet
    if key.endswith("best.pt"):
        (run / key).with_name("metrics.json").unlink()
        assert RunFolder(run).verify(run / key) == run / key


def test_intact_run_predicts(fused_copy, subset_path, tmp_path):
    for strategy in ("argmax", "baseline"):
        out = tmp_path / f"{strategy}.csv"
        result = cli("predict", "--run", fused_copy, "--data", subset_path, "--strategy", strategy, "--out", out,
                     "--quiet")
        assert result.exit_code == 0, result.output
        assert out.exists()


def test_member_from_other_data_refused(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    path = run / "members" / "soil" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["data_sha256"] = "0" * 64
    torch.save(state, path)
    RunFolder(run).record_checksums([path])  # a consistent checksum: the data hash alone must refuse it
    assert_one_line_error(cli("fuse", "--run", run, "--data", subset_path), "soil/best.pt", "different data")


def test_other_class_set_refused(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["classes"] = ["background", "soil", "rock"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(cli("fuse", "--run", run, "--data", subset_path), "classes")


def test_newer_format_version_refused(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["format_version"] = 99
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(cli("fuse", "--run", run, "--data", subset_path), "format version 99", "upgrade")


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, model={"w": torch.ones(3)}, model_config={})
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(path, model={"w": torch.zeros(3)}, model_config={})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left


def test_failed_member_reported_others_saved(tmp_path, subset_path, monkeypatch):
    run = tmp_path / "run"
    real = members.parallel.train_network

    def flaky(config, *args, **kwargs):
        if config.name == "sand":
            raise RuntimeError("injected failure")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(members.parallel, "train_network", flaky)
    args = ["train", "--data", subset_path, "--run", run, "--members", "soil,sand,big_rock", "--epochs", 1,
            "--width", 4, "--samples-per-epoch", 48, "--jobs", 1]  # in this process, where the failure is injected
    result = cli(*args)
    assert result.exit_code == 1
    assert "sand failed: RuntimeError: injected failure" in result.stderr
    assert (run / "members" / "soil" / "metrics.json").exists()
    assert (run / "members" / "big_rock" / "metrics.json").exists()
    assert not (run / "members" / "sand" / "metrics.json").exists()
    soil = (run / "members" / "soil" / "best.pt").read_bytes()
    monkeypatch.setattr(members.parallel, "train_network", real)
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "[sand] epoch 1/1" in again.output and "[soil] epoch" not in again.output
    assert (run / "members" / "soil" / "best.pt").read_bytes() == soil


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--epochs", "-1"], "x>=1"),
        (["train", "--jobs", "0"], "x>=1"),
        (["train", "--members", "soil,lava"], "valid: background, soil"),
        (["fuse", "--strategy", "median"], "learned3x3"),
        (["train", "--preset", "huge"], "quick"),
        (["predict", "--batch-size", "0"], "x>=1"),
        (["evaluate", "--tta", "rotate"], "flip"),
        (["data", "clean", "--min-repeats", "1", "--out", "x.npz"], "x>=2"),
    ],
)
def test_out_of_range_options_refused(args, fragment):
    result = cli(*args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_run_folder_refuses_other_seed(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    with pytest.raises(RunError, match="seed=0"):
        api.train(data=str(subset_path), run=str(run), members="soil", **{**TINY, "seed": 5})


# --- the logits cache, format versions, pickles, changed settings ------------------------------

def test_logits_cache_is_refreshed_when_a_member_changes(tiny_run, subset_path, tmp_path):
    from ensemble.core.data import load_data, tile_ids
    from ensemble.inference import cached_val_logits

    run, data = copy_run(tiny_run, tmp_path), load_data(subset_path)
    lines = []
    first = np.array(cached_val_logits(run, data, tile_ids(data), log=lines.append, engine="torch")[0])
    again = cached_val_logits(run, data, tile_ids(data), log=lines.append, engine="torch")[0]
    assert len(lines) == 1 and np.array_equal(first, again)  # unchanged members: reused
    path = run / "members" / "soil" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["model"]["head.bias"] += 1.5  # soil's logits move up by 1.5 everywhere
    save_checkpoint(path, **state)
    RunFolder(run).record_checksums([path])  # as training does: the change is legitimate
    refreshed = cached_val_logits(run, data, tile_ids(data), log=lines.append, engine="torch")[0]
    assert len(lines) == 2 and "computing member logits" in lines[-1]
    np.testing.assert_allclose(refreshed[:, 1], first[:, 1] + 1.5, atol=1e-4)
    others = [0, 2, 3, 4]
    np.testing.assert_allclose(refreshed[:, others], first[:, others], atol=1e-5)
    meta = json.loads((run / "cache" / "val_cache.json").read_text())
    assert meta["members"]["soil"] == _sha256(path)
    assert np.array_equal(np.load(run / "cache" / "val_logits.npy"), refreshed)


def test_checkpoint_of_a_newer_format_version_refused(fused_copy, subset_path, tmp_path):
    from ensemble import FORMAT_VERSION

    run = copy_run(fused_copy, tmp_path)
    path = run / "members" / "sand" / "best.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, path)
    RunFolder(run).record_checksums([path])  # a consistent checksum: the version alone must refuse it
    result = cli("predict", "--run", run, "--data", subset_path, "--strategy", "argmax", "--out", tmp_path / "s.csv")
    assert_one_line_error(result, "sand/best.pt", f"newer format version {FORMAT_VERSION + 1}", "upgrade")
    assert not (tmp_path / "s.csv").exists()


def test_fuser_of_a_newer_format_version_refused(fused_copy, subset_path, tmp_path):
    from fusion.base import FORMAT_VERSION as FUSER_VERSION

    run = copy_run(fused_copy, tmp_path)
    path = run / "fusion" / "argmax.pt"
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": FUSER_VERSION + 1}, path)
    RunFolder(run).record_checksums([path])
    result = cli("predict", "--run", run, "--data", subset_path, "--strategy", "argmax", "--out", tmp_path / "s.csv")
    assert_one_line_error(result, "fusion/argmax.pt", f"format version {FUSER_VERSION + 1}")


class _Touch:
    """Unpickling this creates ``path``: what a malicious pickle could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("what", ["members/soil/best.pt", "fusion/argmax.pt"])
def test_pickled_object_in_a_run_file_is_refused_unexecuted(fused_copy, subset_path, tmp_path, what):
    run = copy_run(fused_copy, tmp_path)
    marker = tmp_path / "pwned"
    path = run / what
    payload = torch.load(path, weights_only=True)
    payload["model" if what.endswith("best.pt") else "params"]["extra"] = _Touch(marker)
    torch.save(payload, path)
    RunFolder(run).record_checksums([path])  # the checksum matches: the loader itself must refuse
    result = cli("predict", "--run", run, "--data", subset_path, "--strategy", "argmax", "--out", tmp_path / "s.csv")
    assert_one_line_error(result, what, "holds a pickled Python object (", "which is never loaded")
    assert "\x1b" not in result.stderr  # no terminal escapes from torch's message
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is live: loading it unsafely runs the object
    assert marker.exists()


@pytest.mark.parametrize("option, value, key", [("--width", "8", "model"), ("--epochs", "2", "epochs"),
                                                ("--loss", "focal_dice", "loss")])
def test_changed_settings_for_a_started_network_refused(tiny_run, subset_path, tmp_path, option, value, key):
    run = copy_run(tiny_run, tmp_path)
    args = {"--epochs": str(TINY["epochs"]), "--width": str(TINY["width"]),
            "--samples-per-epoch": str(TINY["samples_per_epoch"]), option: value}
    config, latest = (run / "config.json").read_bytes(), (run / "members" / "soil" / "latest.pt").read_bytes()
    result = cli("train", "--data", subset_path, "--run", run, "--members", "soil", "--quiet",
                 *[part for pair in args.items() for part in pair])
    assert_one_line_error(result, "config.json", "soil was started with other settings", key)
    assert (run / "config.json").read_bytes() == config
    assert (run / "members" / "soil" / "latest.pt").read_bytes() == latest
