"""Fuzz: malformed .npz files and image folders end with exit status 2 and one line, nothing written.

:func:`fuzz_inputs.malformed_npz_cases` has one generator per kind of damage (30 kinds), cycled
7 times with fresh random draws: 210 files of 8x16 tiles, all read by ``data inspect``. Every
command that reads data (data inspect, train, evaluate --data, predict --data, predict --images)
also reads one file of every kind with 64x128 tiles, the size of the tiny trained run, so that
no kind is refused merely for its tile size; all in-process.
"""
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from fuzz_inputs import NPZ_KINDS, malformed_npz_cases

from ensemble.cli import main

N_CASES = 7 * NPZ_KINDS


def _check(result, workdir, before):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()  # any progress said before the refusal, then the one error line
    assert lines and lines[-1].startswith("Error: ") and sum(x.startswith("Error:") for x in lines) == 1, lines
    assert "Traceback" not in result.output
    assert sorted(p.name for p in workdir.iterdir()) == before  # no file left behind


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for label, blob in malformed_npz_cases(np.random.default_rng(0), N_CASES):
        path = folder / f"{label.replace(' ', '_')}.npz"
        path.write_bytes(blob)
        paths.append(path)
    return paths


def _kind(path):
    return path.stem.split("-", 1)[1]


@pytest.fixture(scope="module")
def one_per_kind(tmp_path_factory):
    """One file of every kind of damage, with tiles of the tiny run's size (64x128), so that
    evaluate and predict reach the damage rather than refusing the tile size."""
    folder = tmp_path_factory.mktemp("fuzz-kinds")
    paths = []
    for label, blob in malformed_npz_cases(np.random.default_rng(1), NPZ_KINDS, h=64, w=128):
        path = folder / f"{label.replace(' ', '_')}.npz"
        path.write_bytes(blob)
        paths.append(path)
    assert len({_kind(p) for p in paths}) == NPZ_KINDS
    return paths


def _refused_by_all(runner, paths, args_for, workdir, before=()):
    """Run ``args_for(path)`` for every path; fail once, listing every file not refused properly."""
    failures = []
    for path in paths:
        result = runner.invoke(main, [str(a) for a in args_for(path)])
        try:
            _check(result, workdir, sorted(before))
        except AssertionError as exc:
            failures.append(f"{path.name}: {str(exc).splitlines()[0][:300]}")
            for left in set(workdir.iterdir()) - {workdir / name for name in before}:  # report each file once
                shutil.rmtree(left) if left.is_dir() else left.unlink()
    assert not failures, "\n".join(failures)


def test_data_inspect_refuses_every_malformed_file(cases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(cases) == N_CASES and len({_kind(p) for p in cases}) == NPZ_KINDS
    _refused_by_all(CliRunner(), cases, lambda p: ["data", "inspect", "--data", p], tmp_path)


def test_data_inspect_and_train_refuse_every_kind(one_per_kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    _refused_by_all(runner, one_per_kind, lambda p: ["data", "inspect", "--data", p], tmp_path)
    _refused_by_all(runner, one_per_kind,
                    lambda p: ["train", "--data", p, "--run", "run", "--epochs", "1", "--quiet"], tmp_path)


def test_train_refuses_tiles_not_divisible(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    tiles = np.stack([rng.integers(0, 256, (4, 60, 100)), rng.integers(0, 5, (4, 60, 100))], 1).astype(np.uint8)
    np.savez(tmp_path / "odd.npz", training_set=tiles)
    result = CliRunner().invoke(main, ["train", "--data", "odd.npz", "--run", "run", "--quiet"])
    _check(result, tmp_path, ["odd.npz"])
    assert "divisible" in result.stderr


@pytest.fixture(scope="module")
def fitted_run(tiny_run, subset_path, tmp_path_factory):
    """A copy of the tiny run with an argmax fuser."""
    run = tmp_path_factory.mktemp("fuzzrun") / "run"
    shutil.copytree(tiny_run, run)
    result = CliRunner().invoke(main, ["fuse", "--run", str(run), "--data", str(subset_path), "--strategy", "argmax"])
    assert result.exit_code == 0, result.output
    return run


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", ["evaluate --data", "predict --data", "predict --images"])
def test_evaluate_and_predict_refuse_every_kind(command, one_per_kind, fitted_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_files = _listing(fitted_run)
    if command == "evaluate --data":
        def args(path):
            return ["evaluate", "--run", fitted_run, "--data", path, "--out", "ev"]
    else:
        def args(path):
            return ["predict", "--run", fitted_run, "--strategy", "argmax", command.split()[1], path,
                    "--out", "sub.csv", "--quiet"]
    _refused_by_all(CliRunner(), one_per_kind, args, tmp_path)
    assert _listing(fitted_run) == run_files  # nothing written into the run either


def test_predict_refuses_malformed_png_folders(fitted_run, tmp_path, monkeypatch):
    from fuzz_inputs import write_png_folder_case

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    for kind in range(6):
        folder = tmp_path / "in" / str(kind)
        write_png_folder_case(rng, folder, kind)
        result = CliRunner().invoke(main, ["predict", "--run", str(fitted_run), "--strategy", "argmax",
                                           "--images", str(folder), "--out", "sub.csv", "--quiet"])
        _check(result, tmp_path, ["in"])
