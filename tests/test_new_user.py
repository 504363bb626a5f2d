"""A newcomer's first hour, run for real (full tier): the package installed with ``pip install .`` and used
from another directory, and the README's session in a fresh copy of the project (its quickstart is the
main job, ``ensemble run``, end to end: every step, every row of the report).

Both install into fresh virtual environments that see this environment's third-party packages (torch
and the rest, through a ``.pth`` file) but nothing of the project: what they have of it is what the
install put there, so the tests take seconds to install instead of minutes.
"""
import json
import os
import subprocess
import sysconfig
import venv

import numpy as np

from ensemble.core.locations import CACHE_ENV, DATA_ENV, PROJECT_ROOT

TINY_TRAINING = "--epochs 1 --samples-per-epoch 32"  # the width is the preset's: the baseline matches it


def fresh_venv(path):
    """A virtual environment at ``path`` whose only view of this one is its site-packages, appended to its path."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (path / purelib / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, "VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, CACHE_ENV: str(tmp_path / "user-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def test_pip_install_then_predict_from_any_directory(tmp_path, subset_path):
    python = fresh_venv(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(PROJECT_ROOT)],
                   check=True, env=_env(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ensemble = str(python.parent / "ensemble")
    result = subprocess.run([ensemble, "predict", "--data", str(subset_path), "--out", "s.csv"], cwd=elsewhere,
                            env=_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stderr and "ensemble/shipped/reference" in result.stderr  # the installed copy
    assert len((elsewhere / "s.csv").read_text().splitlines()) == 41
    code = ("import numpy as np; from ensemble import api; "
            f"x = np.load({str(subset_path)!r})['test_set'][:3]; print(api.predictor().predict(x).shape)")
    result = subprocess.run([python, "-c", code], cwd=elsewhere, env=_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "(3, 64, 128)", result.stderr
    result = subprocess.run([ensemble, "predict", "--out", "t.csv"], cwd=elsewhere, env=_env(tmp_path),
                            capture_output=True, text=True)  # no data anywhere: one line naming where it looked
    assert result.returncode == 2 and result.stderr.startswith("Error: no data file"), result.stderr
    assert str(tmp_path / "shared" / "data") in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (elsewhere / "t.csv").exists()


def _copy_of_the_project(target):
    """The project's files as a clone has them (tracked and not ignored), committed to a new git repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
            (target / name).chmod(source.stat().st_mode)
    git = ["git", "-c", "user.name=newcomer", "-c", "user.email=newcomer@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run([*git, *command], cwd=target, check=True)


def test_new_user_session_has_no_surprise(tmp_path, subset_path):
    """scripts/new_user_session.sh with tiny trainings and in-sample scoring (--cross-fit 0; the cross-fitted
    evaluation has tests of its own): every step succeeds and the clone stays clean."""
    clone = tmp_path / "clone"
    clone.mkdir()
    _copy_of_the_project(clone)
    fresh_venv(clone / ".venv")  # the README's commands find it and install the project into it
    result = subprocess.run(["bash", "scripts/new_user_session.sh", str(clone), str(subset_path)], cwd=clone,
                            env=_env(tmp_path, TRAIN_ARGS=TINY_TRAINING,
                                     QUICKSTART_ARGS=f"{TINY_TRAINING} --cross-fit 0",
                                     EVALUATE_ARGS="--cross-fit 0", TEST_ARGS="tests/test_docs.py -q -n 0"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [line for line in result.stderr.splitlines() if line.startswith("session step: ")]
    print("\n".join(steps))  # the step timings (pytest -s shows them)
    assert [s.split(": ")[1] for s in steps] == ["quickstart", "tests", "train", "baseline", "fuse", "evaluate",
                                                 "predict", "api.predictor"]
    assert "session: git status clean" in result.stderr
    assert "This is a smoke run" in result.stdout  # the quick table says what the shipped run measured
    assert "using runs/default (no --run given)" in result.stderr  # each verb says the run it used
    for step in ("1/4 members", "2/4 multiclass baseline", "3/4 fusion", "4/4 evaluation"):  # ensemble run
        assert step in result.stderr
    run = clone / "runs" / "default"
    report = json.loads((run / "evaluation" / "report.json").read_text())
    rows = {"baseline", "baseline_bias", "argmax", "bias", "calibrated", "learned", "learned3x3", "hybrid", "stacked",
            "vote"}
    assert set(report["table"]["models"]) == rows
    assert all(name in (run / "evaluation" / "report.md").read_text() for name in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["networks"]["baseline"]["model"]["width"] > config["networks"]["soil"]["model"]["width"]
    assert len((clone / "s.csv").read_text().splitlines()) == 41
    assert np.load(subset_path)["test_set"].shape[0] == 40
