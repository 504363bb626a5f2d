"""The runs shipped in models/: complete, verified, small, reproducible, and meeting their targets.

``models/reference`` is trained for the ``competition`` objective (the default, what the README
headlines); ``models/fullmask`` is the same recipe trained for full 5-class masks, kept for comparison.
"""
import json
import math
import shutil

import pytest
from click.testing import CliRunner
from conftest import copy_run  # noqa: E402

from ensemble.api import default_run
from ensemble.cli import main
from ensemble.core.locations import PROJECT_ROOT
from ensemble.core.metrics import CONVENTIONS
from ensemble.core.runfolder import RunFolder
from ensemble.evaluation.evaluate import evaluate_run
from ensemble.reporting.submission import read_submission

REFERENCE = PROJECT_ROOT / "models" / "reference"
FULLMASK = PROJECT_ROOT / "models" / "fullmask"
NETWORKS = ({f"members/{c}/best.pt" for c in ("background", "soil", "bedrock", "sand", "big_rock")}
            | {"baseline/best.pt"})
FUSERS = {f"fusion/{s}.pt" for s in ("argmax", "calibrated", "learned", "learned3x3")}
#: What the reference run gained beside them: the baseline's replica, the control and the fusers over several networks.
EXTRA_NETWORKS = {"baseline_1/best.pt"} | {f"control/control_{i}/best.pt" for i in range(5)}
EXTRA_FUSERS = {f"fusion/{s}.pt" for s in ("baseline_bias", "hybrid", "stacked", "baseline_pair", "baseline_pair_bias")}
#: The training tiles' image statistics that predict checks its inputs against (scripts/input_stats.py wrote them).
INPUT_STATS = "input_stats.json"


def _shipped_rows(run):
    return json.loads((run / "evaluation" / "report.json").read_text())["table"]


@pytest.mark.parametrize("run, objective", [(REFERENCE, "competition"), (FULLMASK, "fullmask")])
def test_shipped_run_is_complete_verified_and_small(run, objective):
    folder = RunFolder(run)
    assert folder.objective() == objective
    checksums = folder.manifest()["checksums"]
    assert NETWORKS | FUSERS | {INPUT_STATS} <= set(checksums)
    if run == REFERENCE:
        assert EXTRA_NETWORKS | EXTRA_FUSERS <= set(checksums)
    assert not [key for key in checksums if key.startswith("cache/")]  # cached graphs keep theirs in cache/
    for relative in checksums:
        if "/snapshots/" in relative and not (run / relative).exists():
            continue  # budget-curve snapshots are recorded by training but not shipped (.gitignore; size)
        folder.verify(run / relative)  # raises on any changed byte
    shipped = [p for p in run.rglob("*") if p.is_file() and not {"cache", "snapshots"} & set(p.parts)
               and p.name != "latest.pt" and not p.name.startswith(".")]  # what .gitignore lets into the repository
    assert sum(p.stat().st_size for p in shipped) < 20 * 2**20  # the reference run: 12 networks, about 17 MiB


@pytest.mark.parametrize("run", [REFERENCE, FULLMASK])
def test_shipped_input_statistics_are_the_training_tiles(run, data_path):
    """The shipped ``input_stats.json`` is what ``scripts/input_stats.py`` computes from the run's training split
    with today's rules (verified by its recorded sha256 in the test above)."""
    from ensemble.core.data import load_data
    from ensemble.core.imagestats import training_statistics

    folder = RunFolder(run)
    data = load_data(data_path)
    expected = training_statistics(data.images, data.tile_shape, folder.manifest()["split"]["train_indices"])
    recorded = json.loads(folder.input_stats_path.read_text())
    assert {k: v for k, v in recorded.items() if k != "statistics"} == \
        {k: v for k, v in json.loads(json.dumps(expected)).items() if k != "statistics"}
    for name, entry in expected["statistics"].items():
        shipped = recorded["statistics"][name]
        assert shipped["values"] == pytest.approx(entry["values"], rel=1e-9), name
        for side in ("low", "high"):
            assert (shipped[side] is None and entry[side] is None) or shipped[side] == pytest.approx(entry[side]), name


def test_reference_run_is_the_default(tmp_path, subset_path, monkeypatch):
    """``predict`` without ``--run``, where no run of the user's exists, serves models/reference with the default
    engine and leaves every file of it as it was (onnxruntime's graph and its checksum go to the user's cache)."""
    monkeypatch.chdir(tmp_path)  # no runs/default here
    assert default_run() == str(REFERENCE)
    committed = {p: p.read_bytes() for p in REFERENCE.rglob("*") if p.is_file()}
    out = tmp_path / "submission.csv"
    result = CliRunner().invoke(main, ["predict", "--images", str(subset_path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "40 rows" in result.output and len(out.read_text().splitlines()) == 41
    _, labels = read_submission(out)
    assert labels.shape == (40, 64 * 128) and (labels > 0).all()  # competition: class 0 is never written
    assert {p: p.read_bytes() for p in committed} == committed
    assert {p for p in REFERENCE.rglob("*") if p.is_file()} == set(committed)  # and nothing was added


def _assert_same_row(rerun, shipped, name):
    """Every column the README shows for one model, rerun against the committed report."""
    for key, value in shipped["iou"].items():
        assert rerun["iou"][key] == pytest.approx(value, abs=2e-3, nan_ok=True), (name, key)
    for convention in CONVENTIONS:
        assert rerun["miou"][convention] == pytest.approx(shipped["miou"][convention], abs=2e-3), (name, convention)
    for key in ("background_on_labeled", "pixel_accuracy", "ece"):
        assert rerun[key] == pytest.approx(shipped[key], abs=2e-3), (name, key)


def assert_evaluation_reproduces(run, tmp_path, data_path, *, without=(), networks=()):
    """Rerun `ensemble evaluate --run RUN` and compare every README column with the committed report.

    The networks run on the default engine, onnxruntime, as they did for the shipped report (``meta.engine``):
    faster than PyTorch on these networks, and each graph's export takes about a second
    (docs/performance.md, ONNX export); ``tests/test_engines.py`` checks that both engines give the same
    probabilities and masks on the reference run. ``without``: model rows left out of the rerun, their fusers
    deleted from the copy; ``networks``: network folders deleted from it, which only the rows left out read.
    Each row depends on its own networks, its own fuser and the folds only, so the other rows are unchanged.
    """
    shipped = _shipped_rows(run)
    copy = copy_run(run, tmp_path)
    for name in without:
        (copy / "fusion" / f"{name}.pt").unlink(missing_ok=True)
    for folder in networks:
        shutil.rmtree(copy / folder)
    result = evaluate_run(copy, data=data_path, out=tmp_path / "evaluation", n_boot=50)
    models = result["table"]["models"]
    assert set(models) == set(shipped["models"]) - set(without) and result["table"]["headline"] == shipped["headline"]
    for name, row in shipped["models"].items():
        if name in without:
            continue
        _assert_same_row(models[name], row, name)
    for name, value in result["table"]["members"].items():
        assert value == pytest.approx(shipped["members"][name], abs=2e-3)
    assert set(result["table"]["members"]) == set(shipped["members"])


#: What the suite's rerun of models/reference leaves out (``pytest --full-rerun`` keeps it): the rows that read
#: networks no other row reads (the control's five nets; the baseline's replica, read by the two baseline pairs).
#: Every fuser's code and the multiclass rows still run on the real networks; the rows left out are a
#: network's plain softmax (control) or a soft vote (the pairs), which the small runs' tests score.
REFERENCE_LEFT_OUT = {"without": ("control", "baseline_pair", "baseline_pair_bias"),
                      "networks": ("control", "baseline_1")}


def test_shipped_evaluation_reproduces(tmp_path, data_path, full_rerun):
    """models/reference's evaluation reruns to its committed report (models/fullmask's: test_fullmask_run.py,
    a file of its own so that a second test worker can run it beside this one)."""
    assert_evaluation_reproduces(REFERENCE, tmp_path, data_path, **({} if full_rerun else REFERENCE_LEFT_OUT))


def test_reference_run_meets_the_competition_target():
    """Learned fusion beats the baseline in the competition metric with a 95 % interval above 0;
    neither predicts class 0 on a labeled pixel (the committed report, 1000 bootstrap replicates)."""
    table = _shipped_rows(REFERENCE)
    assert table["objective"] == "competition" and table["bootstrap"]["n_boot"] == 1000
    learned = table["differences"]["learned"]["miou_competition"]
    assert learned["diff"] > 0 and learned["low"] > 0
    for name in ("baseline", "learned"):
        assert table["models"][name]["background_on_labeled"] == 0
    assert not math.isnan(table["models"]["learned"]["iou"]["big_rock"])
    # the report also compares with the baseline given validation-tuned class offsets (README: Result)
    assert table["tuned_baseline"] == "baseline_bias" and "learned" in table["tuned_differences"]


def test_reference_budget_curve_is_shipped_and_ends_at_the_report():
    """The committed budget curve (``ensemble evaluate --curve``; its snapshots are not shipped) has the
    full preset's four points, and its last point is the committed evaluation (same checkpoints, tiles, folds)."""
    evaluation = REFERENCE / "evaluation"
    curve = json.loads((evaluation / "budget_curve.json").read_text())
    table = _shipped_rows(REFERENCE)
    epochs = [point["epoch"] for point in curve["points"]]
    assert len(epochs) == 4 and epochs == sorted(epochs)
    train_tiles = len(RunFolder(REFERENCE).manifest()["split"]["train_indices"])  # full: every tile once per epoch
    assert [point["tiles_seen"] for point in curve["points"]] == [epoch * train_tiles for epoch in epochs]
    last = curve["points"][-1]
    for model in ("baseline", "baseline_bias", "argmax", "bias", "calibrated", "learned", "learned3x3"):
        assert last["miou"][model] == pytest.approx(table["models"][model]["miou"]["competition"], abs=1e-9), model
    assert (evaluation / "budget_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Budget curve" in (evaluation / "report.md").read_text()


def test_every_network_of_the_reference_run_has_its_own_seed():
    """No two networks of the shipped run share a seed (two nets of one architecture and seed would be one net)."""
    from ensemble.train import recorded_config

    networks = RunFolder(REFERENCE).config()["networks"]
    assert {"baseline_1", *(f"control_{i}" for i in range(5))} <= set(networks)
    seeds = {name: recorded_config(name, config).network_seed() for name, config in networks.items()}
    assert len(set(seeds.values())) == len(seeds), seeds


def test_reference_run_serves_its_best_strategy_and_reports_equal_compute():
    """The committed report names the best servable model, and answers the three equal-compute questions."""
    table = _shipped_rows(REFERENCE)
    headline = table["headline"]
    servable = [n for n in table["order"] if n in {p.stem for p in (REFERENCE / "fusion").glob("*.pt")}
                or n in ("baseline", "control")]
    best = max(servable, key=lambda n: table["models"][n]["miou"][headline])
    assert table["best_strategy"] == best
    from ensemble.inference import default_strategy

    assert default_strategy(REFERENCE) == best
    budgets = {b["budget"]: b for b in table["budgets"]}
    assert set(budgets) == {"the baseline's budget", "the members' budget", "twice the baseline's budget"}
    pairs = {(d["model"], d["minus"]) for b in table["budgets"] for d in b["differences"]}
    assert {("learned", "baseline_bias"), ("learned", "control"), ("hybrid", "baseline_pair_bias")} <= pairs
    assert [r["variant"] for r in table["ablation"]][:5] == [
        f"without {c}" for c in ("background", "soil", "bedrock", "sand", "big_rock")]


def test_reference_run_records_where_flip_tta_is_served():
    """Every servable model of the committed report has its flip measurement, and the served TTA follows it:
    flip exactly where the gain's interval is above 0."""
    from ensemble.inference import default_strategy, default_tta

    table = _shipped_rows(REFERENCE)
    rows = {row["model"]: row for row in table["tta_gain"]["rows"]}
    fitted = {p.stem for p in (REFERENCE / "fusion").glob("*.pt")}
    assert fitted | {"baseline", "control"} <= set(rows)
    for name, row in rows.items():
        assert row["low"] <= row["diff"] <= row["high"]
        assert default_tta(REFERENCE, name) == ("flip" if row["low"] > 0 else "none"), name
    assert default_tta(REFERENCE, default_strategy(REFERENCE)) == rows[default_strategy(REFERENCE)]["default"]


def test_reference_run_meets_the_two_network_target():
    """hybrid or stacked at least baseline_bias + 0.01 in the competition mIoU, with the 95 % interval above 0."""
    table = _shipped_rows(REFERENCE)
    cells = [table["tuned_differences"][name]["miou_competition"] for name in ("hybrid", "stacked")]
    assert any(cell["diff"] >= 0.01 and cell["low"] > 0 for cell in cells), cells
