"""Importable API: one function per CLI verb, for notebooks and scripts.

Each ``ensemble`` subcommand is a thin wrapper over a function here.
"""
import numpy as np

from .data import load_data, open_npz, resolve_data_path
from .errors import DataError
from .fileio import atomic_path
from .inspect import summarize
from .outliers import find_outliers


def inspect_data(data=None, min_repeats=20, uniform_share=0.95):
    """Validate a data file and return its summary dict (counts, class shares, groups, outliers)."""
    return summarize(load_data(data), min_repeats=min_repeats, uniform_share=uniform_share)


def clean_data(out, data=None, min_repeats=20, uniform_share=0.95):
    """Write a copy of the data file without outlier tiles, same keys, groups and ids aligned.

    Returns ``{"kept": int, "removed": int, "reasons": {reason: count}, "out": str}``.
    """
    path = resolve_data_path(data)
    loaded = load_data(path)
    report = find_outliers(loaded.images, loaded.masks, min_repeats=min_repeats, uniform_share=uniform_share)
    keep = report.keep_mask()
    if not keep.any():
        raise DataError(f"{path}: every tile is an outlier; nothing would be left to write")
    arrays = open_npz(path)
    per_tile = {"training_set", "training_groups", "training_ids"}
    cleaned = {k: (v[keep] if k in per_tile else v) for k, v in arrays.items()}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **cleaned)
    return {
        "out": str(out),
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "reasons": {reason: int(len(idx)) for reason, idx in report.reasons.items()},
    }


def train(data=None, run="runs/default", members="all", **options):
    """Train one-vs-rest members (``"all"`` or comma-separated class names) into ``run``.

    Options: ``preset``, ``epochs``, ``width``, ``jobs``, ``backend``, ``device``, ``seed``,
    ``val_fraction``, ``ignore_background``, ``loss``, ``quiet``, ``log``. Finished members
    are skipped; unfinished ones continue from ``latest.pt``. Returns a list of metrics dicts.
    """
    from .train import parse_members, train_networks

    return train_networks(parse_members(members), data=data, run=run, **options)


def baseline(data=None, run="runs/default", **options):
    """Train the multiclass baseline into ``run``; same options as :func:`train`. Returns its metrics."""
    from .train import BASELINE, train_networks

    options.pop("jobs", None)
    return train_networks([BASELINE], data=data, run=run, **options)[0]


def fuse(run="runs/default", strategy="learned", data=None, seed=0, quiet=False, log=print):
    """Fit fusion ``strategy`` (or ``"all"``) on the run's validation logits; return per-strategy results."""
    from .fuse import fit_fusers, parse_strategies

    return fit_fusers(run, parse_strategies(strategy), data=data, seed=seed, log=None if quiet else log)
