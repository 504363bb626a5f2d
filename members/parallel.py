"""Train several networks in parallel with joblib; each worker gets ``cores // jobs`` torch threads.

Workers load the data from its path (cached per worker process), so tasks carry only
indices and configs; each network is saved the moment it finishes, and a failure in
one network is reported without stopping the others.
"""
import functools
import traceback

import torch
from joblib import Parallel, delayed, parallel_config

from ensemble.core.data import load_data
from ensemble.core.errors import DataError, EnsembleError

from .stacked_training import train_stacked
from .training import TrainConfig, machine_cores, train_network


#: CPU cores this process may use.
available_cores = machine_cores


def threads_per_job(jobs):
    """Torch threads for each of ``jobs`` workers: cores // jobs, at least 1."""
    return max(1, available_cores() // max(1, jobs))


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


def _failure(name, exc):
    return {"name": name, "failed": True, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def train_task(config_dict, data_path, data_sha256, train_idx, val_idx, out_dir, device, threads, quiet):
    """One joblib task: train a network; return its metrics, or ``{"failed": True, "error": ...}``."""
    torch.set_num_threads(threads)
    try:
        data = _cached_data(str(data_path), data_sha256)
        log = None if quiet else functools.partial(print, flush=True)
        return train_network(
            TrainConfig(**config_dict), data.images, data.masks, train_idx, val_idx, out_dir, device, log,
            data_sha256=data.sha256,
        )
    except Exception as exc:  # reported per network; the others go on
        return _failure(config_dict["name"], exc)


def train_stacked_tasks(tasks):
    """Train the members of ``tasks`` (dicts as for :func:`train_task`) stacked in this process, on every core.

    Returns their metrics in order; if the stacked training fails, every member in it is
    reported failed (finished members keep their checkpoints; a rerun resumes the rest).
    """
    torch.set_num_threads(available_cores())
    first = tasks[0]
    try:
        data = _cached_data(str(first["data_path"]), first["data_sha256"])
        log = None if first["quiet"] else functools.partial(print, flush=True)
        return train_stacked(
            [TrainConfig(**t["config_dict"]) for t in tasks], data.images, data.masks, first["train_idx"],
            first["val_idx"], [t["out_dir"] for t in tasks], first["device"], log, data_sha256=data.sha256,
        )
    except Exception as exc:
        return [_failure(t["config_dict"]["name"], exc) for t in tasks]


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


def train_parallel(tasks, jobs=1, backend="loky", scheduler=None):
    """Run :func:`train_task` for each task dict (its keyword arguments) with ``jobs`` workers.

    ``backend="dask"`` sends the tasks to the Dask cluster at ``scheduler`` through joblib's
    dask backend: every worker must be able to read the data path and write the run folder.
    """
    if backend == "dask":
        client = dask_client(scheduler)
        try:
            threads = max(1, min(client.nthreads().values()))
            with parallel_config(backend="dask"):
                return Parallel(n_jobs=jobs)(delayed(train_task)(**task, threads=threads) for task in tasks)
        finally:
            client.close()
    threads = task_threads(len(tasks), jobs)
    if jobs == 1:
        return [train_task(**task, threads=n) for task, n in zip(tasks, threads)]
    return Parallel(n_jobs=jobs, backend=backend)(delayed(train_task)(**task, threads=n)
                                                  for task, n in zip(tasks, threads))
