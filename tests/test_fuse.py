"""`ensemble fuse`: fitting fusers on the validation split of a real (tiny) run, and bad run folders."""
import shutil

import numpy as np
from click.testing import CliRunner
from conftest import assert_one_line_error, copy_run

from ensemble.cli import main
from fusion import load_fuser


def fuse_cli(*args):
    return CliRunner().invoke(main, ["fuse", *args])


def test_calibrated_lowers_nll_on_real_members(tiny_run, subset_path, tmp_path):
    from ensemble import api

    # on a copy: the session's tiny run stays as trained, whatever order the tests run in
    run = copy_run(tiny_run, tmp_path)
    result = api.fuse(run=str(run), strategy="calibrated", data=str(subset_path), quiet=True)["calibrated"]
    assert result["after"]["nll"] < result["before"]["nll"]
    assert result["after"]["ece"] < result["before"]["ece"]


def test_missing_member(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "members" / "sand")
    assert_one_line_error(fuse_cli("--run", str(run), "--data", str(subset_path)), "sand", "missing")


def test_corrupted_checkpoint(tiny_run, subset_path, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    path = run / "members" / "soil" / "best.pt"
    path.write_bytes(path.read_bytes()[:200])
    assert_one_line_error(fuse_cli("--run", str(run), "--data", str(subset_path)), "soil", "best.pt")


def test_other_data_refused(tiny_run, tmp_path, raw_arrays):
    other = tmp_path / "other.npz"
    np.savez(other, training_set=raw_arrays["training_set"][:50])
    assert_one_line_error(fuse_cli("--run", str(tiny_run), "--data", str(other)), "sha256")


def test_unknown_strategy_lists_valid(tiny_run):
    result = fuse_cli("--run", str(tiny_run), "--strategy", "median")
    assert result.exit_code == 2 and "learned3x3" in result.output


def test_export_cli_reproduces_predict_proba(tiny_run, subset_path, tmp_path):
    import torch

    from ensemble.core.data import load_data
    from ensemble.inference import load_members
    from ensemble.inference.export import load_exported

    tiny_run = copy_run(tiny_run, tmp_path)
    assert fuse_cli("--run", str(tiny_run), "--data", str(subset_path), "--strategy", "learned").exit_code == 0
    out = tmp_path / "model.pt2"
    result = CliRunner().invoke(main, ["export", "--run", str(tiny_run), "--strategy", "learned", "--out", str(out)])
    assert result.exit_code == 0, result.output
    images = torch.from_numpy(load_data(subset_path).images[:3])[:, None]
    with torch.inference_mode():
        member_logits = torch.cat([m(images) for m in load_members(tiny_run)], 1)
        expected = load_fuser(tiny_run / "fusion" / "learned.pt").predict_proba(member_logits)
        got = load_exported(out)(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
