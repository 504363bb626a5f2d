"""The ``ensemble`` command: a thin click layer over :mod:`ensemble.api`.

``group`` holds the command group, ``options`` every option (each declared once), and one module per family of
verbs registers its commands on the group: ``data_verbs``, ``training_verbs``, ``serving_verbs``, ``run_verb``.
Only light modules are imported at start-up, so ``ensemble --help`` answers at once; the commands import torch
and the modules that need it when they run.
"""
from . import data_verbs, run_verb, serving_verbs, training_verbs  # noqa: F401  (each registers its verbs)
from .group import EnsembleGroup, main, passive_openmp
from .options import STRATEGY_NAMES

__all__ = ["STRATEGY_NAMES", "EnsembleGroup", "main", "passive_openmp"]
