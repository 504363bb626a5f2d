"""Paired bootstrap over tiles: confidence intervals for metric differences between two models.

Both models are scored on the same tiles, so every replicate draws one set of tile indices
(with replacement) and applies it to both models' per-tile confusion matrices. Replicates
are drawn as a (n_boot, N) matrix of per-tile counts, so the resampled confusion matrices of
all replicates come out of one matrix product, and a metric is vectorised over a stack of
confusion matrices (:func:`~ensemble.core.metrics.mean_ious`, :func:`compare_metrics`): every replicate is
scored in one call.
"""
import functools
import warnings

import numpy as np

from ..core.classes import TERRAIN_CLASSES
from ..core.metrics import COMPARE_COLUMNS, CONVENTIONS, iou_per_class, mean_ious


def _resample_counts(n_tiles, n_boot, seed):
    """(n_boot, n_tiles) float64 matrix: how often each tile is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_tiles, size=(n_boot, n_tiles))
    draws += np.arange(n_boot)[:, None] * n_tiles
    return np.bincount(draws.ravel(), minlength=n_boot * n_tiles).reshape(n_boot, n_tiles).astype(np.float64)


def _replicate_metrics(tile_cms, counts, metric_fn):
    """``metric_fn`` of every replicate's summed confusion matrix, in one call: (n_boot,) or (n_boot, M) float64."""
    tile_cms = np.asarray(tile_cms, dtype=np.float64)
    n_tiles, classes = tile_cms.shape[0], tile_cms.shape[1]
    sums = (counts @ tile_cms.reshape(n_tiles, -1)).reshape(-1, classes, classes)
    values = np.asarray(metric_fn(sums), dtype=np.float64)
    if values.shape[:1] != (len(sums),):
        raise ValueError(f"metric_fn must map a stack of confusion matrices (n, C, C) to (n,) or (n, M) values; "
                         f"got shape {values.shape} for {len(sums)} matrices")
    return values


def _check_paired(cm_a, cm_b):
    cm_a, cm_b = np.asarray(cm_a), np.asarray(cm_b)
    if cm_a.shape != cm_b.shape or cm_a.ndim != 3 or len(cm_a) == 0:
        raise ValueError(f"need two non-empty (N, C, C) arrays of equal shape, got {cm_a.shape} and {cm_b.shape}")
    return cm_a, cm_b


def _interval(cm_a, cm_b, metric_fn, reps_a, reps_b, alpha):
    """Point difference and percentile interval from the replicate metrics of both models."""
    diff = np.asarray(metric_fn(cm_b.sum(axis=0)), dtype=np.float64) - np.asarray(
        metric_fn(cm_a.sum(axis=0)), dtype=np.float64
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        low, high = np.nanpercentile(reps_b - reps_a, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    if diff.ndim == 0:
        return {"diff": float(diff), "low": float(low), "high": float(high)}
    return {"diff": diff, "low": low, "high": high}


def paired_bootstrap(cm_a, cm_b, metric_fn, n_boot=1000, seed=0, alpha=0.05):
    """Percentile bootstrap interval of ``metric_fn(model b) - metric_fn(model a)``.

    ``cm_a`` and ``cm_b`` are (N, C, C) per-tile confusion matrices of two models on the same
    tiles. ``metric_fn`` maps a stack of summed matrices (..., C, C) to one number each (...) or to several
    (..., M), like :func:`~ensemble.core.metrics.mean_ious`. Returns ``{"diff", "low", "high"}``: the difference
    on all tiles and the ``alpha``-level percentile interval; floats for a scalar metric, arrays otherwise.
    Replicates where a metric is NaN (class absent) are left out of its interval.
    """
    cm_a, cm_b = _check_paired(cm_a, cm_b)
    counts = _resample_counts(len(cm_a), n_boot, seed)
    reps_a, reps_b = _replicate_metrics(cm_a, counts, metric_fn), _replicate_metrics(cm_b, counts, metric_fn)
    return _interval(cm_a, cm_b, metric_fn, reps_a, reps_b, alpha)


def paired_bootstraps(cm_a, others, metric_fn, n_boot=1000, seed=0, alpha=0.05):
    """:func:`paired_bootstrap` of ``cm_a`` against each of ``others`` (a list of (N, C, C) arrays on the same
    tiles), sharing one set of resampled tiles and ``cm_a``'s replicates: a list of ``{"diff", "low", "high"}``."""
    cm_a, _ = _check_paired(cm_a, cm_a)
    counts = _resample_counts(len(cm_a), n_boot, seed)
    reps_a = _replicate_metrics(cm_a, counts, metric_fn)
    out = []
    for cm_b in others:
        cm_a, cm_b = _check_paired(cm_a, cm_b)
        out.append(_interval(cm_a, cm_b, metric_fn, reps_a, _replicate_metrics(cm_b, counts, metric_fn), alpha))
    return out


def compare_metrics(cms, convention="competition"):
    """The :data:`COMPARE_COLUMNS` of confusion matrices (..., C, C), as an array (..., M); class IoUs in
    ``convention``."""
    terrain = list(TERRAIN_CLASSES)
    mious = np.stack([mean_ious(cms, c) for c in CONVENTIONS], axis=-1)
    return np.concatenate([iou_per_class(cms, convention)[..., terrain], mious], axis=-1)


def compare_to_baseline(tile_cms, baseline_name, n_boot=1000, seed=0, alpha=0.05, convention="competition"):
    """Paired-bootstrap comparison of every model with the baseline on the same tiles.

    ``tile_cms`` maps model name to its (N, C, C) per-tile confusion matrices. Returns
    ``{model: {column: {"value", "diff", "low", "high"}}}`` for every non-baseline model and
    every column of :data:`COMPARE_COLUMNS` (class IoUs in ``convention``). All models share
    one set of resampled tiles, so each model's result equals
    ``paired_bootstrap(baseline, model, compare_metrics, ...)``.
    """
    if baseline_name not in tile_cms:
        raise KeyError(f"baseline {baseline_name!r} not among models: {', '.join(tile_cms)}")
    metric_fn = functools.partial(compare_metrics, convention=convention)
    base, _ = _check_paired(tile_cms[baseline_name], tile_cms[baseline_name])
    counts = _resample_counts(len(base), n_boot, seed)
    base_reps = _replicate_metrics(base, counts, metric_fn)
    result = {}
    for name, cms in tile_cms.items():
        if name == baseline_name:
            continue
        base, cms = _check_paired(base, cms)
        boot = _interval(base, cms, metric_fn, base_reps, _replicate_metrics(cms, counts, metric_fn), alpha)
        values = metric_fn(cms.sum(axis=0))
        result[name] = {
            col: {"value": float(values[i]), "diff": float(boot["diff"][i]),
                  "low": float(boot["low"][i]), "high": float(boot["high"][i])}
            for i, col in enumerate(COMPARE_COLUMNS)
        }
    return result
