"""Where the networks run: the torch device a verb asks for, and the CPU cores this process may use.

torch is imported only when a device is resolved, so that ``--help`` and the worker server start without it.
"""
import os

from .errors import EnsembleError


def resolve_device(device):
    """``auto`` -> ``cuda`` when available else ``cpu``; an unavailable ``cuda`` is an error naming ``--device``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EnsembleError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return device


def machine_cores():
    """CPU cores this process may use (recorded with every epoch's threads, for the budget curve)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
