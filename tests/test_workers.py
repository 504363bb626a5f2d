"""Local training workers (members/workers.py): forked from a server that has imported torch, results in order,
a dead worker a one-line error, and the server started before a training command imports torch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble.core.errors import EnsembleError
from members import workers

ROOT = Path(__file__).resolve().parents[1]


def _square(x, *, plus=0):
    return x * x + plus


def _preloaded():
    """What a forked worker holds before it runs anything of its own (this module imports no torch)."""
    return {name: name in sys.modules for name in workers.PRELOAD}, os.getpid()


def _die(code):
    os._exit(code)


def test_results_come_back_in_order_from_several_workers():
    calls = [((x,), {"plus": 1}) for x in range(6)]
    assert workers.run_in_workers(_square, calls, jobs=2) == [x * x + 1 for x in range(6)]


def test_workers_start_with_torch_and_the_training_code_imported():
    workers.start_server()
    results = workers.run_in_workers(_preloaded, [((), {}), ((), {})], jobs=2)
    for loaded, pid in results:
        assert loaded == {name: True for name in workers.PRELOAD}
        assert pid != os.getpid()


def test_a_worker_that_dies_is_a_one_line_error():
    with pytest.raises(EnsembleError, match="a training worker process stopped without its result") as info:
        workers.run_in_workers(_die, [((3,), {}), ((0,), {})], jobs=2)
    assert "\n" not in str(info.value) and "rerun the same command" in str(info.value)


@pytest.mark.parametrize("jobs, backend, stacked, expected", [
    (None, "processes", False, True), (1, "processes", False, False), (None, "loky", False, False),
    (None, "processes", True, False)])
def test_workers_are_forked_only_for_several_local_processes(jobs, backend, stacked, expected):
    assert workers.will_use_workers(5, jobs=jobs, backend=backend, stacked=stacked) is expected
    assert workers.will_use_workers(1) is False  # one network trains in the command's process


def test_a_training_command_starts_the_server_before_it_imports_torch():
    """The server's imports run beside the command's own: it is started while this process has no torch."""
    code = ("import sys; from multiprocessing import forkserver; from ensemble.api import training; "
            "training._start_workers(5, {}); "
            "print('torch' in sys.modules, forkserver._forkserver._forkserver_pid is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_an_interrupt_stops_every_worker_at_once(tmp_path):
    """Ctrl-C (SIGINT to the command's process group) ends the command and its workers within seconds, long tasks
    and queued ones included, and leaves no worker process behind."""
    import signal
    import time

    pids = tmp_path / "pids"
    # Ctrl-C's handler, as in a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"import os, time, sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from members import workers; "
            f"import test_workers as t; workers.run_in_workers(t._sleep_and_record, [(({str(pids)!r},), {{}})] * 4, "
            "jobs=2)")
    err = tmp_path / "stderr"  # a file, not a pipe: the workers and the server hold it too, and a full pipe blocks
    with open(err, "w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stderr=stderr)
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    assert pids.exists() and len(pids.read_text().split()) == 2, "the two workers did not start"
    started = time.time()
    os.killpg(child.pid, signal.SIGINT)
    child.wait(timeout=30)
    assert time.time() - started < 10 and child.returncode != 0
    assert "KeyboardInterrupt" in err.read_text()
    time.sleep(0.5)
    alive = [pid for pid in map(int, pids.read_text().split()) if _running(pid)]
    assert alive == [] and len(pids.read_text().split()) == 2  # the queued tasks never started


def _sleep_and_record(path):
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    import time

    time.sleep(120)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its parent counts as ended
        return fh.read().split(")")[-1].split()[0] != "Z"
