"""Messages through logging: progress and diagnostics on stderr, results on stdout, a timestamped log file in the
run folder for each verb that writes to it, the API in argument words, and progress without a terminal."""
import logging
import re

from click.testing import CliRunner
from conftest import TINY

from ensemble import api
from ensemble.cli import main
from ensemble.core.logs import console, run_log
from ensemble.core.progress import Progress
from ensemble.core.runfolder import LOG_DIR

TINY_CLI = ["--epochs", "1", "--samples-per-epoch", "48", "--seed", "0"]


def test_a_training_verb_says_progress_on_stderr_and_results_on_stdout(tmp_path, subset_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["baseline", "--data", str(subset_path), "--run", str(run), *TINY_CLI])
    assert result.exit_code == 0, result.output
    assert "training baseline on" in result.stderr and "[baseline] epoch 1/1" in result.stderr
    assert "[baseline]" not in result.stdout and "training baseline on" not in result.stdout
    assert f"run: {run}" in result.stdout  # the result a user pipes
    (log_file,) = (run / LOG_DIR).glob("baseline-*.log")
    assert re.fullmatch(r"baseline-\d{8}-\d{6}\.log", log_file.name)
    text = log_file.read_text()
    line = next(line for line in text.splitlines() if "[baseline] epoch 1/1" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO members\.", line)  # timestamped, by package


def test_quiet_says_nothing(tmp_path, subset_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["baseline", "--data", str(subset_path), "--run", str(run), "--quiet",
                                       *TINY_CLI])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_the_api_speaks_in_argument_words(tmp_path, subset_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a program that configured nothing: the API shows
    # its lines on stderr
    api.baseline(data=str(subset_path), **{**TINY, "quiet": False, "width": None})
    err = capsys.readouterr().err
    assert "using runs/default (no run given)" in err and "--run" not in err
    assert "[baseline] epoch 1/1" in err


def test_a_program_that_configured_logging_gets_the_messages(tmp_path, subset_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append((record.name, record.getMessage()))

    root = logging.getLogger()
    handler = Collect()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    api.baseline(data=str(subset_path), **{**TINY, "quiet": False, "width": None})
    assert any(name.startswith("members") and "epoch 1/1" in message for name, message in seen)
    assert "epoch 1/1" not in capsys.readouterr().err  # its handlers, not ours


def test_a_nested_verb_writes_to_the_enclosing_log(tmp_path):
    with console(), run_log(tmp_path, "run") as outer:
        with run_log(tmp_path, "fuse") as inner:
            logging.getLogger("fusion.x").info("fitted")
    assert inner == outer and [p.name for p in (tmp_path / LOG_DIR).iterdir()] == [outer.rsplit("/", 1)[1]]
    assert "INFO fusion.x: fitted" in (tmp_path / LOG_DIR / outer.rsplit("/", 1)[1]).read_text()


def test_progress_without_a_terminal_says_plain_lines():
    lines = []
    meter = Progress(3, lines.append, unit="steps", desc="robustness")
    assert meter.bar is None  # pytest's stderr is no terminal
    for label in ("jpeg severity 1", "jpeg severity 2", "noise severity 1"):
        meter.step(label)
    meter.close()
    assert lines == ["robustness 1/3: jpeg severity 1", "robustness 2/3: jpeg severity 2",
                     "robustness 3/3: noise severity 1"]
    quiet = Progress(3, None, unit="steps")
    quiet.step("x")
    assert quiet.bar is None


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    lines = []
    meter = Progress(4, lines.append, unit="batches", desc="[soil] epoch 1/2", every=None)
    assert meter.bar is not None
    for done in range(1, 5):
        meter.update(done, loss=0.5, **{"tiles/s": 100.0})
    meter.close()
    assert lines == []  # the bar says it, not the log
    assert "[soil] epoch 1/2" in terminal.getvalue() and "/4" in terminal.getvalue()  # the bar, drawn
