"""`ensemble run`: the whole job end to end on a small real subset."""
import json

from click.testing import CliRunner

from ensemble.cli import main


def test_run_end_to_end_writes_every_row(tmp_path, subset_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--preset", "quick", "--data", str(subset_path), "--run", str(run),
                                       "--epochs", "1", "--width", "4", "--samples-per-epoch", "32", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    for step in ("1/4 members", "2/4 multiclass baseline", "3/4 fusion", "4/4 evaluation"):
        assert step in result.output
    last = result.output.strip().splitlines()[-1]  # a smoke run says so, with the shipped run's numbers
    assert last.startswith("This is a smoke run") and "The shipped full run measured" in last
    report = json.loads((run / "evaluation" / "report.json").read_text())
    rows = set(report["table"]["models"])
    assert rows == {"baseline", "baseline_bias", "argmax", "bias", "calibrated", "learned", "learned3x3", "hybrid", "stacked"}
    md = (run / "evaluation" / "report.md").read_text()
    assert all(name in md for name in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["networks"]["baseline"]["model"]["width"] > config["networks"]["soil"]["model"]["width"]
