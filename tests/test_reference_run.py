"""The reference run shipped in models/reference: complete, verified, small, and reproducible."""
import json

import pytest
from click.testing import CliRunner

from ensemble.api import default_run
from ensemble.cli import main
from ensemble.data import PROJECT_ROOT
from ensemble.evaluate import evaluate_run
from ensemble.runfolder import RunFolder

from conftest import copy_run  # noqa: E402

REFERENCE = PROJECT_ROOT / "models" / "reference"
SHIPPED = ("best.pt", ".json", ".png", ".md")


def test_reference_run_is_the_default_complete_and_verified():
    assert default_run() == str(REFERENCE)
    folder = RunFolder(REFERENCE)
    checksums = folder.manifest()["checksums"]
    expected = {f"members/{c}/best.pt" for c in ("background", "soil", "bedrock", "sand", "big_rock")}
    expected |= {"baseline/best.pt"} | {f"fusion/{s}.pt" for s in ("argmax", "calibrated", "learned", "learned3x3")}
    assert expected <= set(checksums)
    for relative in checksums:
        folder.verify(REFERENCE / relative)  # raises on any changed byte
    shipped = [p for p in REFERENCE.rglob("*") if p.is_file() and "cache" not in p.parts and p.name != "latest.pt"
               and not p.name.startswith(".")]
    assert sum(p.stat().st_size for p in shipped) < 15 * 2**20


def test_predict_without_run_uses_the_reference(tmp_path, subset_path):
    out = tmp_path / "submission.csv"
    result = CliRunner().invoke(main, ["predict", "--images", str(subset_path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "40 rows" in result.output and len(out.read_text().splitlines()) == 41


def test_reference_evaluation_reproduces_the_shipped_report(tmp_path, data_path):
    """Rerun `ensemble evaluate --run models/reference` and compare with the committed report (README table)."""
    shipped = json.loads((REFERENCE / "evaluation" / "report.json").read_text())["table"]["models"]
    run = copy_run(REFERENCE, tmp_path)
    result = evaluate_run(run, data=data_path, out=tmp_path / "evaluation", n_boot=50)
    models = result["table"]["models"]
    assert set(models) == set(shipped)
    for name, row in shipped.items():
        for key in ("miou_kaggle", "miou_labeled"):
            assert models[name][key] == pytest.approx(row[key], abs=2e-3), (name, key)
    # The target of the reference run: learned fusion beats the baseline by 0.02 mean IoU and on big rock.
    assert models["learned"]["miou_kaggle"] >= models["baseline"]["miou_kaggle"] + 0.02
    assert models["learned"]["iou"]["big_rock"] > models["baseline"]["iou"]["big_rock"]
