"""Fuzz: malformed .npz files and image folders end with exit status 2 and one line, nothing written."""
import numpy as np
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from fuzz_inputs import malformed_npz_cases

N_CASES = 210


def _check(result, workdir, before):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line, line
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


def test_data_inspect_refuses_every_malformed_file(cases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for path in cases:
        _check(runner.invoke(main, ["data", "inspect", "--data", str(path)]), tmp_path, [])


def test_train_refuses_every_malformed_file(cases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for path in cases[:: max(1, len(cases) // 60)]:
        result = runner.invoke(main, ["train", "--data", str(path), "--run", "run", "--epochs", "1", "--quiet"])
        _check(result, tmp_path, [])


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
    import shutil

    run = tmp_path_factory.mktemp("fuzzrun") / "run"
    shutil.copytree(tiny_run, run)
    result = CliRunner().invoke(main, ["fuse", "--run", str(run), "--data", str(subset_path), "--strategy", "argmax"])
    assert result.exit_code == 0, result.output
    return run


def test_evaluate_and_predict_refuse_malformed_files(cases, fitted_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for path in cases[:: max(1, len(cases) // 40)]:
        _check(runner.invoke(main, ["evaluate", "--run", str(fitted_run), "--data", str(path), "--out", "ev"]),
               tmp_path, [])
        for source in ("--data", "--images"):
            result = runner.invoke(main, ["predict", "--run", str(fitted_run), "--strategy", "argmax", source,
                                          str(path), "--out", "sub.csv", "--quiet"])
            _check(result, tmp_path, [])


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
