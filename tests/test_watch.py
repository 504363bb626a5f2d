"""Watching a run train: every network's history.csv and the run's progress.png after each epoch, ensemble status,
TensorBoard as an optional extra, and the lock that keeps one network to one training process."""
import json

import pytest
from click.testing import CliRunner
from conftest import TINY, assert_one_line_error

import members.training as training
from ensemble import api
from ensemble.cli import main
from ensemble.core.errors import EnsembleError
from ensemble.core.history import COLUMNS, TrainingLock, history_table, is_training, read_history
from ensemble.core.runfolder import HISTORY_CSV, PROGRESS_PNG, TENSORBOARD_DIR, TRAINING_LOCK
from ensemble.reporting.progress import TrainingWatch, network_histories
from ensemble.reporting.status import run_status, status_lines

TWO_EPOCHS = {**TINY, "epochs": 2, "width": None, "jobs": 1}


@pytest.fixture
def watched(monkeypatch):
    """What a user sees of the run at the start of each epoch, as the epoch trains: history rows, the figure's
    modification time, and ensemble status of the network."""
    seen = []
    real = training.NetworkTrainer.epoch_batches

    def epoch_batches(self):
        run = self.out_dir.parent
        progress = run / PROGRESS_PNG
        statuses = {s.name: s for s in run_status(run)}
        seen.append({"epoch": self.epoch, "rows": read_history(self.out_dir / HISTORY_CSV),
                     "progress": progress.stat().st_mtime_ns if progress.exists() else None,
                     "status": statuses[self.config.name]})
        yield from real(self)

    monkeypatch.setattr(training.NetworkTrainer, "epoch_batches", epoch_batches)
    return seen


def test_history_and_progress_are_written_while_the_next_epoch_trains(tmp_path, subset_path, watched):
    run = tmp_path / "run"
    api.baseline(data=str(subset_path), run=str(run), **TWO_EPOCHS)
    first, second = watched
    assert first["epoch"] == 0 and first["rows"] == [] and first["progress"] is None
    assert first["status"].state == "running" and first["status"].epoch == 0
    assert second["epoch"] == 1 and len(second["rows"]) == 1 and second["progress"] is not None
    row = second["rows"][0]
    assert row["epoch"] == 1 and row["step"] > 0 and row["lr"] > 0 and row["train_loss"] > 0 and row["val_loss"] > 0
    assert 0 <= row["val_score"] <= 1 and row["tiles_per_s"] > 0 and row["seconds"] >= row["val_seconds"] > 0
    assert any(row[f"iou_{name}"] is not None for name in ("soil", "bedrock", "sand"))
    assert second["status"].state == "running" and second["status"].epoch == 1
    assert second["status"].best_score == pytest.approx(row["val_score"], abs=1e-5)
    assert second["status"].eta_seconds is not None
    final = read_history(run / "baseline" / HISTORY_CSV)
    assert [r["epoch"] for r in final] == [1, 2]
    metrics = json.loads((run / "baseline" / "metrics.json").read_text())
    assert [h["val_iou"] for h in metrics["history"]] == pytest.approx([r["val_score"] for r in final], abs=1e-5)
    assert (run / PROGRESS_PNG).stat().st_mtime_ns > second["progress"]  # redrawn after epoch 2
    assert not (run / "baseline" / TRAINING_LOCK).exists()
    assert [s.state for s in run_status(run)] == ["done"]


def test_history_of_a_member_scores_its_class_only(tmp_path, subset_path):
    run = tmp_path / "run"
    api.train(data=str(subset_path), run=str(run), members="sand", **{**TINY, "jobs": 1})
    (row,) = read_history(run / "members" / "sand" / HISTORY_CSV)
    assert row["iou_sand"] == pytest.approx(row["val_score"], abs=1e-5)
    assert all(row[f"iou_{name}"] is None for name in ("background", "soil", "bedrock", "big_rock"))
    assert list(network_histories(run)) == ["sand"]


def test_resumed_network_rewrites_its_whole_history(tmp_path, subset_path):
    run = tmp_path / "run"
    api.baseline(data=str(subset_path), run=str(run), **TWO_EPOCHS)
    (run / "baseline" / "metrics.json").unlink()  # as if stopped before it was written: latest.pt holds epoch 2
    (run / "baseline" / HISTORY_CSV).unlink()
    api.baseline(data=str(subset_path), run=str(run), **TWO_EPOCHS)
    assert [r["epoch"] for r in read_history(run / "baseline" / HISTORY_CSV)] == [1, 2]


def test_history_table_leaves_unknown_cells_empty():
    text = history_table([{"epoch": 1, "loss": 0.5, "val_iou": 0.25, "iou": {"sand": 0.125}}])
    header, line = text.splitlines()
    assert header.split(",") == list(COLUMNS)
    cells = dict(zip(COLUMNS, line.split(",")))
    assert cells["train_loss"] == "0.5" and cells["val_score"] == "0.25" and cells["iou_sand"] == "0.125"
    assert cells["lr"] == "" and cells["iou_soil"] == ""


def test_status_of_queued_stopped_and_done_networks(tmp_path, subset_path):
    run = tmp_path / "run"
    api.baseline(data=str(subset_path), run=str(run), **{**TWO_EPOCHS, "epochs": 1})
    config = json.loads((run / "config.json").read_text())
    config["networks"]["soil"] = {**config["networks"]["baseline"], "epochs": 3}  # planned, not started
    config["networks"]["sand"] = {**config["networks"]["baseline"], "epochs": 4}
    (run / "config.json").write_text(json.dumps(config))
    sand = run / "members" / "sand"
    sand.mkdir(parents=True)
    (sand / HISTORY_CSV).write_text(history_table([{"epoch": 1, "loss": 1.0, "val_iou": 0.3, "seconds": 60.0}]))
    states = {s.name: s for s in run_status(run)}
    assert states["baseline"].state == "done" and states["soil"].state == "queued"
    assert states["sand"].state == "stopped" and states["sand"].eta_seconds == pytest.approx(180.0)
    lock = TrainingLock(sand)
    try:
        assert is_training(sand)
        assert {s.name: s.state for s in run_status(run)}["sand"] == "running"
    finally:
        lock.release()
    assert not is_training(sand)
    lines = status_lines(str(run), list(states.values()))
    assert "1 done, 1 stopped, 1 queued" in lines[0]
    result = CliRunner().invoke(main, ["status", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "stopped" in result.output and "queued" in result.output and "resume" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["status", "--run", str(run), "--json"]).output)
    assert {s["name"]: s["state"] for s in as_json} == {"baseline": "done", "soil": "queued", "sand": "stopped"}


def test_status_of_a_folder_that_is_no_run(tmp_path):
    assert_one_line_error(CliRunner().invoke(main, ["status", "--run", str(tmp_path / "nothing")]), "config.json")


def test_a_network_trains_in_one_process_at_a_time(tmp_path):
    lock = TrainingLock(tmp_path)
    try:
        with pytest.raises(EnsembleError, match="another process"):
            TrainingLock(tmp_path)
    finally:
        lock.release()
    TrainingLock(tmp_path).release()  # free again once released


def test_a_figure_that_fails_never_stops_training(tmp_path, monkeypatch, caplog):
    import ensemble.reporting.progress as progress

    def broken(run_dir):
        raise OSError("disk full")

    monkeypatch.setattr(progress, "draw_progress", broken)
    watch = TrainingWatch(tmp_path)
    watch(tmp_path / "baseline", {"epoch": 1})
    watch(tmp_path / "baseline", {"epoch": 2})
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "disk full" in caplog.records[0].getMessage()


def test_tensorboard_logs_scalars_and_the_progress_figure(tmp_path, subset_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    api.baseline(data=str(subset_path), run=str(run), tensorboard=True, **TWO_EPOCHS)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(run / TENSORBOARD_DIR / "baseline")).Reload()
    assert {"loss/train", "loss/validation", "score/validation", "learning_rate"} <= set(scalars.Tags()["scalars"])
    assert [e.step for e in scalars.Scalars("loss/train")] == [1, 2]
    figures = EventAccumulator(str(run / TENSORBOARD_DIR / "run")).Reload()
    assert "progress" in figures.Tags()["images"]


def test_tensorboard_missing_is_one_line(tmp_path, subset_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = CliRunner().invoke(main, ["baseline", "--data", str(subset_path), "--run", str(tmp_path / "run"),
                                       "--epochs", "1", "--tensorboard", "--quiet"])
    assert_one_line_error(result, "pip install 'mars-ensemble[tensorboard]'")
    assert not (tmp_path / "run").exists()
