"""Importable API: one function per CLI verb, for notebooks and scripts.

Each ``ensemble`` subcommand is a thin wrapper over a function here (each marked ``@api_function``: its errors
name arguments, its messages go to the ``ensemble`` logger). Modules that load torch are imported inside the
functions that need them, so ``ensemble --help`` starts without torch.
"""
from .data import clean_data, inspect_data
from .run import run_all, status
from .serving import default_run, evaluate, export, fuse, predict, predictor, score
from .training import baseline, control, distill, train

__all__ = ["baseline", "clean_data", "control", "default_run", "distill", "evaluate", "export", "fuse",
           "inspect_data", "predict", "predictor", "run_all", "score", "status", "train"]
