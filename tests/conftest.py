"""Shared fixtures: the real data file from ../shared/data, loaded once, and small subsets of it."""
import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ensemble.core.data import load_data, resolve_data_path  # noqa: E402
from ensemble.core.errors import DataError  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """A cache folder of the session's own for what commands derive from the shipped runs (their ONNX graphs):
    parallel test workers never share one, and the user's ~/.cache is left alone."""
    from ensemble.core.locations import CACHE_ENV

    path = tmp_path_factory.mktemp("user-cache")
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def data_path():
    """Path of the shared AI4Mars file; tests that need it skip, saying why, when it is absent (CI has it)."""
    try:
        path = resolve_data_path(None)
    except DataError as exc:
        pytest.skip(f"shared data not found ({exc}); put ../shared beside the project or set $MARS_DATA")
    if not path.exists():
        pytest.skip(f"shared data not found at {path}; put ../shared beside the project or set $MARS_DATA")
    return path


@pytest.fixture(scope="session")
def mars(data_path):
    """The validated shared data (MarsData)."""
    return load_data(data_path)


@pytest.fixture(scope="session")
def raw_arrays(data_path):
    """The raw arrays of the shared file, as stored."""
    with np.load(data_path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@pytest.fixture
def write_npz(tmp_path):
    """Write arrays to an .npz in tmp_path and return its path."""

    def _write(name="data.npz", **arrays):
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return _write


@pytest.fixture(scope="session")
def subset_path(tmp_path_factory, raw_arrays):
    """A small real subset (about 400 tiles from 60 groups) in the Kaggle layout, with test tiles."""
    groups = raw_arrays["training_groups"]
    chosen = np.unique(groups)[::17][:60]
    keep = np.flatnonzero(np.isin(groups, chosen))[:400]
    path = tmp_path_factory.mktemp("subset") / "subset.npz"
    np.savez(
        path,
        training_set=raw_arrays["training_set"][keep],
        training_groups=groups[keep],
        training_ids=raw_arrays["training_ids"][keep],
        test_set=raw_arrays["test_set"][:40],
        test_ids=raw_arrays["test_ids"][:40],
    )
    return path


#: Training options for tests: one short epoch of width-4 networks.
TINY = dict(preset="quick", epochs=1, width=4, samples_per_epoch=48, seed=0, quiet=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, subset_path):
    """A run folder with all five width-4 members and a width-matched baseline, trained for one tiny epoch."""
    from ensemble import api

    run = tmp_path_factory.mktemp("tiny") / "run"
    api.train(data=str(subset_path), run=str(run), members="all", **TINY)
    api.baseline(data=str(subset_path), run=str(run), **{**TINY, "width": None})
    return run



def fused_copy(tiny_run, subset_path, folder, *, learned_epochs):
    """A copy of the session's tiny run in ``folder`` with its ``argmax`` and ``learned`` fusers fitted (the latter
    for ``learned_epochs``) and their checksums recorded, as ``ensemble fuse`` does: fusers are verified when
    loaded."""
    import shutil

    from ensemble.core.data import tile_ids
    from ensemble.core.runfolder import RunFolder
    from ensemble.inference import cached_val_logits
    from fusion import get_fuser

    run = folder / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("fusion", "evaluation"))
    data = load_data(subset_path)
    logits, ids, val_idx = cached_val_logits(run, data, tile_ids(data))
    for name, kwargs in (("argmax", {}), ("learned", {"max_epochs": learned_epochs, "max_pixels": 20_000, "seed": 0})):
        path = run / "fusion" / f"{name}.pt"
        get_fuser(name, **kwargs).fit(logits, data.masks[val_idx], tile_ids=ids).save(path)
        RunFolder(run).record_checksums([path])
    return run

#: Fixtures that train a run (directly or through another fixture): a test using one is in the full tier only.
SLOW_FIXTURES = {"tiny_run", "curve_run", "reference_copy"}
#: Test files whose every test trains or scores whole runs.
SLOW_FILES = {"test_reference_run.py", "test_fullmask_run.py", "test_dask.py", "test_combined.py",
              "test_new_user.py"}
#: The longest test files, longest first (docs/design.md, Tests: how to measure them). ``scripts/test.sh``
#: gives pytest-xdist whole files in collection order (``--dist loadfile --no-loadscope-reorder``), so these
#: start first and the short files fill in around them, instead of a long file starting last and running alone.
LONGEST_FILES = ("test_reference_run.py", "test_recipe.py", "test_combined.py", "test_distill.py",
                 "test_fullmask_run.py", "test_new_user.py", "test_cli.py", "test_engines.py", "test_fuse.py",
                 "test_members.py", "test_evaluate_predict.py", "test_frames.py", "test_stacked_training.py",
                 "test_fuzz.py", "test_atomic_writes.py", "test_reliability.py", "test_stacked.py")


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` (``bash scripts/test.sh --fast`` leaves them out) every test that needs a trained run or
    long training: those using a :data:`SLOW_FIXTURES` fixture, those of :data:`SLOW_FILES`, and those marked.
    (Before ``-m`` selects: conftest hooks run ahead of pytest's own.)"""
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


class _LongestFilesFirst:
    """Put the files of :data:`LONGEST_FILES` first, in its order (the others keep theirs), after every other
    reordering and selection of the items."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        rank = {name: i for i, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_addoption(parser):
    parser.addoption("--full-rerun", action="store_true",
                     help="rerun every row of the shipped runs' evaluations (the suite leaves out the rows that "
                          "read networks no other row reads)")


@pytest.fixture(scope="session")
def full_rerun(request):
    """True under ``pytest --full-rerun``: the shipped runs' reruns compare every row of their reports."""
    return request.config.getoption("--full-rerun")


def pytest_configure(config):
    config.pluginmanager.register(_LongestFilesFirst(), "longest-files-first")


def copy_run(run, tmp_path):
    """A writable copy of a run folder without its logits cache."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "cache", ignore_errors=True)
    return copy


def load_script(name):
    """The module of ``scripts/<name>.py``, which is no package: loaded from its file, with ``scripts/`` on
    ``sys.path`` while it loads so that it can import its sibling scripts."""
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(scripts))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


#: Run in a fresh process by :func:`predict_peak_mb`: load the run's learned predictor once, predict the warm-up
#: input, reset the peak resident memory (VmHWM, via /proc/self/clear_refs), then ``predict_run`` the input with
#: the loaded predictor and print the peak above the resident memory before it, with ``predict_run``'s result.
#: Loading the networks, whose transient peak would hide what the inputs cost, stays outside the measurement.
_PEAK_CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
import ensemble.predict as predict

def status_mb(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024

run, warm, images, options, outputs = sys.argv[1:]
options, outputs = json.loads(options), json.loads(outputs)
loaded = predict.Predictor(run, "learned", **options)
predict.Predictor = lambda *args, **kwargs: loaded
predict.predict_run(run, "learned", images=warm, **outputs, **options)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # peak resident memory := resident memory now
before = status_mb("VmRSS")
result = predict.predict_run(run, "learned", images=images, **outputs, **options)
print(json.dumps({"peak_mb": status_mb("VmHWM") - before, **result}))
"""


def predict_peak_mb(run, warm, images, *, options, outputs, timeout=900):
    """``predict_run``'s result for ``images`` in a fresh single-threaded process (after a warm-up on ``warm``,
    both written to ``outputs``, predicted with ``options`` such as ``scale``), plus ``peak_mb``: its peak resident
    memory above the memory before it, read from the kernel, not sampled.

    glibc's mmap threshold is fixed (``MALLOC_MMAP_THRESHOLD_``), so every large buffer goes back to the system
    when freed and the peak follows live memory; with glibc's adaptive default it wanders by ~10 MB."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    argv = [sys.executable, "-c", _PEAK_CHILD, str(run), str(warm), str(images), json.dumps(options),
            json.dumps({key: str(value) for key, value in outputs.items()})]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_one_line_error(result, *fragments):
    """A CliRunner result that failed with exit 2 and one ``Error: ...`` line, the last on stderr, holding
    ``fragments``."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()  # progress said before the refusal shares stderr with it
    assert lines and sum(line.startswith("Error:") for line in lines) == 1, result.stderr
    line = lines[-1]
    assert line.startswith("Error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, line
