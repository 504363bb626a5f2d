"""scripts/ship_run.py: a finished run copied into a shipped folder without its working files, or refused whole."""
import shutil
from pathlib import Path

import pytest
from conftest import load_script

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "reference"


@pytest.fixture(scope="module")
def ship():
    return load_script("ship_run")


@pytest.fixture
def finished_run(tmp_path):
    """A copy of the shipped run with the working files a training leaves beside the shipped ones."""
    run = tmp_path / "runs" / "reference"
    shutil.copytree(REFERENCE, run)
    (run / "baseline" / "latest.pt").write_bytes(b"resume state")
    (run / "baseline" / "snapshots").mkdir()
    (run / "baseline" / "snapshots" / "epoch_002.pt").write_bytes(b"snapshot")
    (run / "logs").mkdir()
    (run / "logs" / "train-20261207-075509.log").write_text("log\n")
    (run / "cache" / "onnx").mkdir(parents=True)
    (run / "cache" / "onnx" / "baseline.onnx").write_bytes(b"graph")
    (run / "progress.png").write_bytes(b"png")
    (run / ".manifest.lock").write_bytes(b"")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events").write_bytes(b"events")
    return run


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_ships_exactly_what_git_keeps(ship, finished_run, tmp_path):
    destination = tmp_path / "models" / "reference"
    destination.mkdir(parents=True)
    (destination / "stale.txt").write_text("from the run shipped before\n")
    assert ship.main(["--run", str(finished_run), "--to", str(destination)]) == 0
    assert _files(destination) == _files(REFERENCE)
    for rel in _files(REFERENCE):
        assert (destination / rel).read_bytes() == (REFERENCE / rel).read_bytes(), rel
    assert [p.name for p in destination.parent.iterdir()] == ["reference"]  # no staging folder left behind


def test_refuses_an_altered_fuser_and_writes_nothing(ship, finished_run, tmp_path, capsys):
    fuser = finished_run / "fusion" / "stacked.pt"
    fuser.write_bytes(fuser.read_bytes() + b"\0")
    destination = tmp_path / "models" / "reference"
    destination.mkdir(parents=True)
    (destination / "kept.txt").write_text("the shipped run\n")
    assert ship.main(["--run", str(finished_run), "--to", str(destination)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("Error: ") and "stacked.pt" in error and "sha256" in error and "\n" not in error
    assert _files(destination) == ["kept.txt"]


@pytest.mark.parametrize("damage", ["unevaluated", "unfinished", "oversized"])
def test_refuses_a_run_not_ready_to_ship(ship, finished_run, tmp_path, capsys, damage):
    if damage == "unevaluated":
        (finished_run / "evaluation" / "report.json").unlink()
        expected = "report.json: missing"
    elif damage == "unfinished":
        (finished_run / "members" / "sand" / "metrics.json").unlink()
        expected = "has not finished training"
    else:
        (finished_run / "notes.bin").write_bytes(b"\0" * (ship.MAX_FILE_BYTES + 1))
        expected = "notes.bin"
    destination = tmp_path / "models" / "reference"
    assert ship.main(["--run", str(finished_run), "--to", str(destination), "--dry-run"]) == 2
    assert expected in capsys.readouterr().err
    assert not destination.exists()
