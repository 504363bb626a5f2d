"""Training worker processes on this machine, forked from a server process that has imported torch.

A fresh Python process imports torch and ``torch._dynamo`` (the optimiser imports it at its first
step) before it can train: seconds of CPU per worker, paid by every worker at once on a small
machine. Here the workers are forked from one multiprocessing *forkserver* that has imported
:data:`PRELOAD`, so a worker inherits them and starts training at once. The server only imports;
it never runs a torch operation, so no thread pool is broken by the fork. :func:`start_server`
starts it ahead of the command's own imports and data loading, which then overlap its imports.

This module imports nothing but the standard library, so that a command can start the server
before it imports torch itself. Where the platform has no forkserver (Windows), workers are
spawned. As with every multiprocessing start method but ``fork``, a script that trains in worker
processes must guard its entry point with ``if __name__ == "__main__":``.
"""
import concurrent.futures
import multiprocessing
import signal

from ensemble.core.defaults import DEFAULT_BACKEND
from ensemble.core.errors import EnsembleError

#: What the server imports once for every worker it forks: torch, the optimiser's ``torch._dynamo``, the training code.
PRELOAD = ("torch", "torch._dynamo", "members.parallel")


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # applies when the server starts, not to a running one
    return context


def start_server():
    """Start the forkserver now unless it runs; it imports :data:`PRELOAD` in the background and is reused
    by every later pool of this process."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def will_use_workers(n_networks, *, jobs=None, backend=DEFAULT_BACKEND, stacked=False):
    """Whether training ``n_networks`` with these options (``TrainOptions`` fields) forks local workers."""
    return backend == DEFAULT_BACKEND and not stacked and (jobs or n_networks) > 1


def _ignore_interrupts():
    """A worker's start: Ctrl-C is the command's to handle (it stops every worker), so that a worker interrupted
    mid-task does not go on to the next queued task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_in_workers(function, calls, *, jobs):
    """``function(*args, **kwargs)`` for each ``(args, kwargs)`` of ``calls`` in ``jobs`` worker processes, in
    order; return the results in that order.

    If a worker process dies (killed, out of memory), the other workers are stopped and a one-line
    :class:`~ensemble.core.errors.EnsembleError` says so. Workers ignore Ctrl-C: on an interrupt this process
    stops them all, and no queued task starts.
    """
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=_context(),
                                                initializer=_ignore_interrupts)
    try:
        futures = [pool.submit(function, *args, **kwargs) for args, kwargs in calls]
        return [future.result() for future in futures]
    except concurrent.futures.process.BrokenProcessPool:
        raise EnsembleError("a training worker process stopped without its result (killed, or out of memory); the "
                            "networks finished so far are saved: rerun the same command to train the rest") from None
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
