"""scripts/model_card.py: a run's model card, generated from its report, configs, manifest and metrics.

Fast and offline: the cards are made from a small fake run folder (the shipped run's files trimmed) and from
``models/reference`` read-only; no network is loaded and nothing is trained or evaluated.
"""
import copy
import json
from pathlib import Path

import pytest
from conftest import load_script

from ensemble.core import fileio
from ensemble.core.runfolder import MODEL_CARD, RunFolder

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "models" / "reference"
MEMBERS = ("background", "soil", "bedrock", "sand", "big_rock")


card = load_script("model_card")


def _entry(diff, value):
    return {"diff": diff, "low": diff - 0.01, "high": diff + 0.01, "value": value}


def _model(miou, ious):
    return {"miou": {"competition": miou, "labeled": miou, "allpixels": miou / 2}, "iou": ious,
            "pixel_accuracy": 0.9, "n_tiles": 12, "background_on_labeled": 0.0, "ece": 0.01}


ROBUSTNESS = {
    "headline": "competition", "n_tiles": 12, "seed": 0, "middle_severity": 2, "severities": [1, 2, 3],
    "corruptions": [{"name": "jpeg", "family": "jpeg", "levels": [90, 75, 50], "parameter": "quality",
                     "trained": True}],
    "families": ["jpeg"],
    "models": {name: {"clean": clean, "clean_iou": {},
                      "rows": [],
                      "all": {"mpc": mpc, "rpc": mpc / clean, "n": 3,
                              "worst": {"corruption": "jpeg", "severity": 3, "miou": 0.1234, "drop": -0.5}},
                      "trained": {"mpc": mpc, "rpc": mpc / clean, "n": 3, "worst": None},
                      "held_out": None}
               for name, clean, mpc in (("baseline", 0.5, 0.3111), ("baseline_bias", 0.55, 0.3222),
                                        ("learned", 0.6543, 0.4321))},
}


def fake_run(root, robustness=False):
    """A run folder with the shipped run's file structure, trimmed: five members and the baseline, the
    report of three models (served ``learned``), the manifest without checksums and with a short split."""
    config = json.loads((REFERENCE / "config.json").read_text())
    config["networks"] = {n: config["networks"][n] for n in (*MEMBERS, "baseline")}
    manifest = json.loads((REFERENCE / "manifest.json").read_text())
    manifest["checksums"] = {}
    manifest["split"] = {"method": "group", "outliers_dropped": [], "train_indices": list(range(30)),
                         "val_groups": [1, 2], "val_indices": list(range(30, 42))}
    manifest["data"]["tiles"] = 42
    ious = {"soil": 0.81, "bedrock": 0.82, "sand": 0.71, "big_rock": 0.2711}
    report = {
        "meta": {"n_tiles": 12, "split": "val", "engine": "torch", "tta": "none", "run": "runs/fake",
                 "fusers_fitted_on": "cross-fitted: 2 folds", "data_sha": manifest["data"]["sha256"]},
        "table": {
            "headline": "competition", "objective": "competition", "best_strategy": "learned",
            "baseline": "baseline", "tuned_baseline": "baseline_bias",
            "bootstrap": {"alpha": 0.05, "method": "paired percentile bootstrap over tiles", "n_boot": 50, "seed": 0},
            "models": {"baseline": _model(0.5, {**ious, "big_rock": 0.1}),
                       "baseline_bias": _model(0.55, ious), "learned": _model(0.6543, ious)},
            "differences": {m: {"miou_competition": _entry(d, v), **{c: _entry(d, i) for c, i in ious.items()}}
                            for m, d, v in (("baseline_bias", 0.05, 0.55), ("learned", 0.1543, 0.6543))},
            "tuned_differences": {"learned": {"miou_competition": _entry(0.1043, 0.6543),
                                              **{c: _entry(0.0, i) for c, i in ious.items()}}},
            "members": {m: 0.5 for m in MEMBERS},
            "order": ["baseline", "baseline_bias", "learned"],
            "tta_gain": {"defaults": {"baseline": "none", "baseline_bias": "none", "learned": "none"}, "rows": []},
        },
    }
    if robustness:
        report["table"]["robustness"] = copy.deepcopy(ROBUSTNESS)
    folder = RunFolder(root)
    (root / "evaluation").mkdir(parents=True)
    (root / "evaluation" / "report.json").write_text(json.dumps(report))
    (root / "config.json").write_text(json.dumps(config))
    (root / "manifest.json").write_text(json.dumps(manifest))
    for name in config["networks"]:
        folder.network_dir(name).mkdir(parents=True)
        (folder.network_dir(name) / "metrics.json").write_text(json.dumps(
            {"parameters": 100 if name in MEMBERS else 1000, "best_epoch": 2, "epochs_run": 3, "best_val_iou": 0.5}))
    return root


def test_card_names_the_served_strategy_its_score_and_intervals(tmp_path):
    text = card.model_card(fake_run(tmp_path / "run"))
    assert "**Served by default: `learned`**" in text
    assert "competition mIoU **0.654**" in text  # the report's 0.6543
    assert "It runs 5 networks" in text and "500 parameters" in text  # the five members' metrics.json
    assert "| `learned` (served) | 0.654 | +0.154 [+0.144, +0.164] | +0.104 [+0.094, +0.114] |" in text
    assert "| big_rock | 0.100 | 0.271 | 0.271 | +0.154 [+0.144, +0.164] | +0.000 [-0.010, +0.010] |" in text
    assert "paired percentile bootstrap over tiles, 50 replicates, 95 %" in text
    assert "big_rock is the weakest class of `learned`: IoU 0.271 (baseline 0.100)" in text
    assert "30 training tiles, 12 validation tiles from 2 rover stops" in text
    assert "## Clean vs corrupted images\n\nNot measured: the report has no robustness section" in text
    assert "see the AI4Mars dataset's terms" in text


def test_card_shows_the_robustness_benchmark_when_the_report_has_it(tmp_path):
    text = card.model_card(fake_run(tmp_path / "run", robustness=True))
    assert "Not measured" not in text
    assert "| `learned` (served) | 0.654 | 0.432 | 0.660 | 0.432 | not recorded | jpeg 3: 0.123 |" in text
    assert "| `baseline` | 0.500 | 0.311 |" in text


def test_a_value_the_files_lack_reads_not_recorded(tmp_path):
    run = fake_run(tmp_path / "run")
    report = json.loads((run / "evaluation" / "report.json").read_text())
    del report["table"]["bootstrap"]
    (run / "evaluation" / "report.json").write_text(json.dumps(report))
    (RunFolder(run).network_dir("soil") / "metrics.json").unlink()
    text = card.model_card(run)
    assert "Intervals: not recorded, not recorded replicates, (level not recorded)" in text
    assert ("| `soil` | one-vs-rest member: soil vs the rest | 1 | 8 | 3 | dilated_se | bce_dice | not recorded |"
            in text)
    assert "It runs 5 networks" in text and "not recorded parameters" in text  # a sum with a part missing


def test_recorded_augmentation_and_the_key_it_lacks(tmp_path):
    """A config recorded without ``degrade`` says so and how the trainer reads it; the card then says the
    networks trained without degradations."""
    text = card.model_card(fake_run(tmp_path / "run"))
    assert "* `hflip`: `true`" in text
    assert "* `degrade`: not recorded; the trainer reads a missing key as `0.0`" in text
    assert "trained without degradations of the image" in text


def test_print_writes_nothing_and_write_replaces_the_card_atomically(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run")
    assert card.main(["--run", str(run)]) == 0
    assert capsys.readouterr().out == card.model_card(run) and not (run / MODEL_CARD).exists()

    (run / MODEL_CARD).write_text("old card\n")
    assert card.main(["--run", str(run), "--write"]) == 0
    assert (run / MODEL_CARD).read_text() == card.model_card(run)
    assert sorted(p.name for p in run.iterdir()) == sorted(["MODEL_CARD.md", "config.json", "manifest.json",
                                                            "evaluation", "members", "baseline"])
    capsys.readouterr()

    # a write that fails at the final move leaves the card as it was and no temporary file
    (run / MODEL_CARD).write_text("old card\n")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", refuse)
    assert card.main(["--run", str(run), "--write"]) == 1
    monkeypatch.undo()
    assert (run / MODEL_CARD).read_text() == "old card\n"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot write") and "disk full" in err and err.count("\n") == 1


@pytest.mark.parametrize("case", ["missing", "empty", "broken_report", "no_table", "no_manifest"])
def test_a_bad_run_gives_one_error_line_and_exit_2(tmp_path, capsys, case):
    if case == "missing":
        run = tmp_path / "nowhere"
    elif case == "empty":
        run = tmp_path / "empty"
        run.mkdir()
    else:
        run = fake_run(tmp_path / "run")
        if case == "broken_report":
            (run / "evaluation" / "report.json").write_text("{not json")
        elif case == "no_table":
            (run / "evaluation" / "report.json").write_text(json.dumps({"meta": {}}))
        else:
            (run / "manifest.json").unlink()
    assert card.main(["--run", str(run), "--write"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("Error: ") and out.err.count("\n") == 1
    assert not (run / MODEL_CARD).exists()


def test_the_shipped_run_gives_a_card_without_writing(tmp_path):
    """models/reference is read only: making its card writes nothing there; the card names the report's best."""
    before = {p: p.stat().st_mtime_ns for p in REFERENCE.rglob("*")}
    text = card.model_card(REFERENCE)
    assert {p: p.stat().st_mtime_ns for p in REFERENCE.rglob("*")} == before
    table = json.loads((REFERENCE / "evaluation" / "report.json").read_text())["table"]
    best = table["best_strategy"]
    assert f"**Served by default: `{best}`**" in text
    assert f"competition mIoU **{table['models'][best]['miou']['competition']:.3f}**" in text
    assert "python scripts/model_card.py --run models/reference --write" in text


def test_the_committed_reference_card_is_the_one_the_script_makes():
    """models/reference/MODEL_CARD.md is what `python scripts/model_card.py --run models/reference --write`
    makes of the run's files now: rerun it when they change."""
    assert (REFERENCE / MODEL_CARD).read_text() == card.model_card(REFERENCE)
