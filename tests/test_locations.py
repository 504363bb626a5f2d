"""Which run and which data a command uses (one rule for every verb), shipped runs read-only, errors in
argument words for Python callers, and the quick run's closing line."""
import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error

from ensemble import api
from ensemble.cli import main
from ensemble.core import locations
from ensemble.core.data import resolve_data_path
from ensemble.core.errors import DataError, EnsembleError, RunError, in_argument_words
from ensemble.core.locations import DEFAULT_RUN, resolve_run, shipped_run
from ensemble.core.runfolder import RunFolder

REFERENCE = shipped_run()


def test_without_run_every_verb_uses_runs_default_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = []
    assert resolve_run(None, log=lines.append) == str(DEFAULT_RUN)
    assert lines == [f"using {DEFAULT_RUN} (no --run given)"]
    lines.clear()
    assert resolve_run(None, trained=True, log=lines.append) == str(REFERENCE)  # no run of the user's yet
    assert "shipped reference run" in lines[0]
    (tmp_path / DEFAULT_RUN).mkdir(parents=True)
    (tmp_path / DEFAULT_RUN / "manifest.json").write_text("{}")
    assert resolve_run(None, trained=True) == str(DEFAULT_RUN)  # the user's run wins once it exists


def test_reference_names_the_shipped_run_unless_a_folder_of_that_name_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_run("reference") == str(REFERENCE)
    (tmp_path / "reference").mkdir()
    assert resolve_run("reference") == "reference"
    assert resolve_run("runs/mine") == "runs/mine"


def test_shipped_runs_are_read_only_and_keep_their_cache_outside(tmp_path, monkeypatch):
    monkeypatch.setenv(locations.CACHE_ENV, str(tmp_path / "cache"))
    folder = RunFolder(REFERENCE)
    assert folder.read_only and not RunFolder(tmp_path).read_only
    assert folder.cache_dir.parent == tmp_path / "cache" and REFERENCE not in folder.cache_dir.parents
    assert folder.report_dir == locations.SHIPPED_REPORTS / "reference"
    onnx = folder.onnx_path("members")
    assert folder.relative(onnx) == "cache/onnx/members.onnx"  # keyed as in any run's cache
    with pytest.raises(RunError, match="shipped run is read-only, so it cannot train"):
        folder.check_writable("train")


@pytest.mark.parametrize("verb", [["fuse", "--strategy", "learned"], ["train", "--members", "soil"],
                                  ["baseline"], ["control"]])
def test_writing_verbs_refuse_the_shipped_run(verb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    committed = {p: p.stat().st_mtime_ns for p in REFERENCE.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, [*verb, "--run", "reference", "--quiet"])
    assert_one_line_error(result, "a shipped run is read-only", "cp -r")
    assert {p: p.stat().st_mtime_ns for p in REFERENCE.rglob("*") if p.is_file()} == committed


def test_missing_data_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(locations.DATA_ENV, raising=False)
    monkeypatch.setattr(locations, "data_candidates", lambda: [tmp_path / "a" / "x.npz", tmp_path / "b" / "x.npz"])
    monkeypatch.setattr("ensemble.core.data.data_candidates", locations.data_candidates)
    with pytest.raises(DataError) as info:
        resolve_data_path(None)
    message = str(info.value)
    assert "--data not given" in message and "$MARS_DATA not set" in message
    assert str(tmp_path / "a" / "x.npz") in message and str(tmp_path / "b" / "x.npz") in message
    monkeypatch.setenv(locations.DATA_ENV, str(tmp_path / "env.npz"))
    assert resolve_data_path(None) == tmp_path / "env.npz"
    assert str(resolve_data_path("given.npz")) == "given.npz"


@pytest.mark.parametrize("message, expected", [
    ("--cross-fit 1: needs 2 folds", "cross_fit=1: needs 2 folds"),
    ("--tta: unknown 'x'; valid: none, flip", "tta: unknown 'x'; valid: none, flip"),
    ("x.npz: file not found (pass --data PATH or set $MARS_DATA)",
     "x.npz: file not found (pass data=PATH or set $MARS_DATA)"),
    ("--png out: is a file", "png_dir=out: is a file"),
    ("not fitted; fit it with: ensemble fuse --run r --strategy hybrid",
     "not fitted; fit it with: ensemble fuse --run r --strategy hybrid"),
])
def test_messages_in_argument_words(message, expected):
    assert in_argument_words(message) == expected


def test_api_errors_name_arguments_and_the_cli_names_options(tmp_path):
    with pytest.raises(EnsembleError, match=r"^cross_fit=1: "):
        api.evaluate(run=str(REFERENCE), cross_fit=1, quiet=True)
    result = CliRunner().invoke(main, ["evaluate", "--run", "reference", "--cross-fit", "1", "--quiet"])
    assert_one_line_error(result, "--cross-fit 1: ")


def test_a_quick_run_ends_with_what_the_shipped_run_measured():
    from ensemble.reporting.report import smoke_run_line

    report = REFERENCE / "evaluation" / "report.json"
    table = json.loads(report.read_text())["table"]
    line = smoke_run_line(table, report)
    assert line.startswith("This is a smoke run") and str(report) in line
    for name in (table["best_strategy"], "baseline_bias", "baseline"):
        assert f"{name} {table['models'][name]['miou'][table['headline']]:.3f}" in line


def test_an_unknown_strategy_lists_every_valid_one_and_a_missing_fuser_how_to_fit_it(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run, ignore=shutil.ignore_patterns("cache", "*.onnx"))
    (run / "fusion" / "learned3x3.pt").unlink()
    for args, fragments in ((["--strategy", "nonsense"], ("'nonsense' is not a strategy", "valid strategies of",
                                                          "baseline_pair_bias", "control")),
                            (["--strategy", "learned3x3"], ("it serves:", "ensemble fuse --run", "learned3x3"))):
        result = CliRunner().invoke(main, ["export", "--run", str(run), *args, "--out", str(tmp_path / "m.pt2")])
        assert_one_line_error(result, *fragments)
    result = CliRunner().invoke(main, ["predict", "--run", "reference", "--strategy", "nonsense",
                                       "--out", str(tmp_path / "s.csv")])
    assert_one_line_error(result, "valid strategies of")
    assert not (tmp_path / "s.csv").exists()
