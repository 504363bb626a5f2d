"""Train several networks in parallel (worker processes, joblib or Dask); each worker gets ``cores // jobs`` torch
threads.

A :class:`TrainTask` carries one network's config, where to write it and where its tiles are:
workers on this machine memory-map one shared copy of the split's arrays (:func:`shared_split`),
written once by the dispatching process; workers of a Dask cluster load the data file from its path
and check its sha256. Each network is saved the moment it finishes, and a failure in one network is
reported without stopping the others.
"""
import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed, parallel_config

from ensemble.core.classes import NO_LABEL
from ensemble.core.data import load_data
from ensemble.core.defaults import DEFAULT_BACKEND
from ensemble.core.devices import machine_cores
from ensemble.core.errors import DataError, EnsembleError
from ensemble.core.logs import line_logger, task_logging

from .batches import SplitArrays
from .config import TrainConfig
from .stacked_training import train_stacked
from .training import finished_metrics, train_network
from .workers import run_in_workers


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """One network to train: its config (:meth:`TrainConfig.to_dict`), its folder, and its tiles.

    ``split_dir`` is a folder of the split's arrays (:meth:`SplitArrays.save`) that workers on this
    machine memory-map; without it the worker loads ``data_path``, checks ``data_sha256`` and indexes
    it by ``train_idx`` / ``val_idx``. ``teacher_path`` is a distilled network's teacher logits of the training
    tiles (an ``.npy`` file, memory-mapped read-only by the worker); ``unlabeled_path`` its tiles without labels
    (an ``.npy``), appended to the training tiles, with the teacher's logits of them after the others'.
    """

    config: dict
    out_dir: str
    data_path: str
    data_sha256: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    device: str = "cpu"
    quiet: bool = False
    split_dir: str = None
    teacher_path: str = None
    unlabeled_path: str = None
    on_epoch: object = None  # a picklable callable (network folder, history row), run after every epoch
    log_file: str = None  # the command's log file in the run folder, which a worker appends its lines to

    @property
    def name(self):
        """The network's name."""
        return self.config["name"]

    def with_split(self, split_dir):
        """This task reading its tiles from ``split_dir``."""
        return dataclasses.replace(self, split_dir=split_dir)


def threads_per_job(jobs):
    """Torch threads for each of ``jobs`` workers: cores // jobs, at least 1."""
    return max(1, machine_cores() // max(1, jobs))


def task_threads(n_tasks, jobs):
    """Torch threads of each of ``n_tasks`` tasks run ``jobs`` at a time, in order.

    cores // jobs each, except in a last, incomplete round: its tasks run alone on the workers
    (5 members on 2 cores: the fifth trains while the other worker has nothing left), so they share
    every core instead of leaving some idle.
    """
    full = n_tasks - n_tasks % jobs
    last = n_tasks - full
    return [threads_per_job(jobs) if i < full else threads_per_job(last) for i in range(n_tasks)]


@functools.lru_cache(maxsize=2)
def _cached_data(path, sha256):
    data = load_data(path)
    if data.sha256 != sha256:
        raise DataError(f"{path}: changed while training (sha256 {data.sha256[:12]}…, expected {sha256[:12]}…)")
    return data


@functools.lru_cache(maxsize=1)
def _split_of(path, sha256, train_idx, val_idx):
    data = _cached_data(path, sha256)
    return SplitArrays.select(data.images, data.masks, np.frombuffer(train_idx, dtype=np.int64),
                              np.frombuffer(val_idx, dtype=np.int64))


def task_split(task):
    """The tiles of ``task``: the shared arrays in its ``split_dir``, else its data file indexed by the split
    (once per worker process for the last split asked); with the teacher's logits when it has a ``teacher_path``."""
    if task.split_dir:
        split = SplitArrays.open(task.split_dir)
    else:
        split = _split_of(str(task.data_path), task.data_sha256, np.asarray(task.train_idx, dtype=np.int64).tobytes(),
                          np.asarray(task.val_idx, dtype=np.int64).tobytes())
    return with_teacher(split, task.teacher_path, task.unlabeled_path)


def with_teacher(split, teacher_path, unlabeled_path=None):
    """``split`` with the teacher logits in ``teacher_path`` memory-mapped read-only, and the tiles in
    ``unlabeled_path`` appended to the training tiles with masks of :data:`NO_LABEL` (``split`` itself without)."""
    if not teacher_path:
        return split
    changes = {"train_teacher_logits": np.load(teacher_path, mmap_mode="r")}
    if unlabeled_path:
        tiles = np.load(unlabeled_path)
        changes["train_images"] = np.concatenate([split.train_images, tiles])
        changes["train_masks"] = np.concatenate([split.train_masks, np.full(tiles.shape, NO_LABEL, np.uint8)])
    return dataclasses.replace(split, **changes)


def _pending(tasks):
    return [t for t in tasks if finished_metrics(t.out_dir) is None]


def _local_split(tasks, data):
    """The split of ``tasks`` indexed from the loaded ``data`` in this process (``None`` without data, or when every
    task is finished)."""
    pending = _pending(tasks)
    if data is None or not pending:
        return None
    return SplitArrays.select(data.images, data.masks, pending[0].train_idx, pending[0].val_idx)


#: Shared splits are folders ``<temp>/mars-split-<pid>-*`` of the process that wrote them.
SPLIT_PREFIX = "mars-split-"


def _split_root():
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _remove_orphans(root):
    """Remove the shared splits of processes that no longer run (killed before they could remove them)."""
    for path in Path(root).glob(f"{SPLIT_PREFIX}*"):
        pid = path.name[len(SPLIT_PREFIX):].partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def shared_split(tasks, data):
    """Yield ``tasks`` reading one shared copy of their split, saved from the loaded ``data`` into a temporary
    folder of this machine (in memory where ``/dev/shm`` exists) and removed on exit.

    Every task of one plan has the same split; processes that memory-map it need no copy of the data
    file, no sha256 of it and no indexing of their own. Folders left by a killed command are removed
    by the next one.
    """
    split = _local_split(tasks, data)
    if split is None:
        yield tasks
        return
    root = _split_root()
    if os.path.isdir("/proc"):
        _remove_orphans(root)
    folder = tempfile.mkdtemp(prefix=f"{SPLIT_PREFIX}{os.getpid()}-", dir=root)
    try:
        split.save(folder)
        del split
        yield [t.with_split(folder) for t in tasks]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _failure(name, exc):
    return {"name": name, "failed": True, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def train_task(task, *, threads, split=None):
    """One joblib task: train the network of ``task`` on ``threads`` torch threads; return its metrics, or
    ``{"failed": True, "error": ...}``. ``split`` (a :class:`SplitArrays`) is its tiles when the caller holds
    them already (training in the calling process), else :func:`task_split` finds them."""
    torch.set_num_threads(threads)
    try:
        done = finished_metrics(task.out_dir)
        if done:
            return done
        log = None if task.quiet else line_logger(__name__)
        split = task_split(task) if split is None else with_teacher(split, task.teacher_path, task.unlabeled_path)
        with task_logging(task.log_file, task.quiet):
            return train_network(TrainConfig(**task.config), split, task.out_dir,
                                 device=task.device, log=log, data_sha256=task.data_sha256, on_epoch=task.on_epoch)
    except Exception as exc:  # reported per network; the others go on
        return _failure(task.name, exc)


def train_stacked_tasks(tasks, *, data=None):
    """Train the members of ``tasks`` (:class:`TrainTask`) stacked in this process, on every core.

    ``data`` is the loaded :class:`~ensemble.core.data.MarsData` when the caller holds it. Returns their
    metrics in order; if the stacked training fails, every member in it is reported failed (finished
    members keep their checkpoints; a rerun resumes the rest).
    """
    torch.set_num_threads(machine_cores())
    first = tasks[0]
    try:
        split = _local_split(tasks, data)
        log = None if first.quiet else line_logger(__name__)
        return train_stacked([TrainConfig(**t.config) for t in tasks], task_split(first) if split is None else split,
                             out_dirs=[t.out_dir for t in tasks], device=first.device, log=log,
                             data_sha256=first.data_sha256, on_epoch=first.on_epoch)
    except Exception as exc:
        return [_failure(t.name, exc) for t in tasks]
    finally:
        _split_of.cache_clear()  # the tiles stay in this process no longer than its training


def dask_client(scheduler):
    """A ``distributed.Client`` for ``scheduler`` (an address); clear errors if dask is missing or unreachable."""
    try:
        from distributed import Client
    except ImportError:
        raise EnsembleError(
            "--backend dask needs the optional extra: pip install 'mars-ensemble[distributed]'"
        ) from None
    if not scheduler:
        raise EnsembleError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise EnsembleError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None


def train_parallel(tasks, *, jobs=1, backend=DEFAULT_BACKEND, scheduler=None, data=None):
    """Run :func:`train_task` for each :class:`TrainTask` with ``jobs`` workers; return their results in order.

    ``backend``: ``processes`` (worker processes forked from a server that has imported torch,
    :mod:`members.workers`), ``loky`` (joblib's, each worker a fresh Python), ``threading``, or ``dask``:
    the tasks go to the Dask cluster at ``scheduler`` through joblib's dask backend, and every worker
    must be able to read the data path and write the run folder. Local worker processes memory-map
    one copy of the split saved from ``data`` (the loaded :class:`~ensemble.core.data.MarsData`) when
    it is given; one job, or ``threading``, trains in this process on the tiles already in memory.
    """
    if backend == "dask":
        client = dask_client(scheduler)
        try:
            threads = max(1, min(client.nthreads().values()))
            with parallel_config(backend="dask"):
                return Parallel(n_jobs=jobs)(delayed(train_task)(task, threads=threads) for task in tasks)
        finally:
            client.close()
    threads = task_threads(len(tasks), jobs)
    if jobs == 1 or backend == "threading":  # in this process: the tiles already in memory
        split = _local_split(tasks, data)
        try:
            if jobs == 1:
                return [train_task(task, threads=n, split=split) for task, n in zip(tasks, threads)]
            return Parallel(n_jobs=jobs, backend=backend)(delayed(train_task)(task, threads=n, split=split)
                                                          for task, n in zip(tasks, threads))
        finally:
            _split_of.cache_clear()
    with shared_split(tasks, data) if data is not None else contextlib.nullcontext(tasks) as shared:
        if backend == DEFAULT_BACKEND:  # forked local workers (members.workers)
            return run_in_workers(train_task, [((task,), {"threads": n}) for task, n in zip(shared, threads)],
                                  jobs=jobs)
        return Parallel(n_jobs=jobs, backend=backend)(delayed(train_task)(task, threads=n)
                                                      for task, n in zip(shared, threads))
