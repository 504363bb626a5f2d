"""The comparison ``table`` of an evaluation (its structure: :mod:`ensemble.reporting.report`): every model's
metrics from its per-tile confusion matrices, and paired-bootstrap differences to the baseline."""
import math

import numpy as np

from ..core.classes import CLASS_NAMES, TERRAIN_CLASSES
from ..core.metrics import all_mean_ious, background_on_labeled, iou_per_class, pixel_accuracy
from ..core.objectives import HEADLINE_CONVENTION
from .bootstrap import compare_to_baseline

#: How the differences' intervals are computed (``table["bootstrap"]["method"]``).
BOOTSTRAP_METHOD = "paired percentile bootstrap over tiles"


def _model_row(tile_cms, ece, headline):
    """Summary metrics of one model from its (N, C, C) per-tile confusion matrices."""
    cm = np.asarray(tile_cms).sum(axis=0)
    iou = iou_per_class(cm, headline)
    return {
        "iou": {CLASS_NAMES[c]: float(iou[c]) for c in TERRAIN_CLASSES},
        "miou": all_mean_ious(cm),
        "pixel_accuracy": pixel_accuracy(cm, headline),
        "background_on_labeled": background_on_labeled(cm),
        "ece": float(ece),
        "n_tiles": int(len(tile_cms)),
    }


def build_table(tile_cms, probs_ece, member_ious, *, baseline_name="baseline", n_boot=1000, seed=0,
                objective="competition", tuned_name=None):
    """Build the comparison ``table`` (structure in the module docstring).

    ``tile_cms`` maps model name to (N, C, C) per-tile confusion matrices on the same tiles;
    ``probs_ece`` maps model name to its expected calibration error (models without
    probabilities may be left out: NaN); ``member_ious`` maps class name to the binary IoU of
    that class's one-vs-rest member. Per-class IoUs and the bootstrap are in the headline
    convention of ``objective``. Differences to ``baseline_name`` use a paired bootstrap
    with ``n_boot`` replicates and a 95 % percentile interval. When ``tuned_name`` is among the
    models, every model but the baseline is also compared with it (``tuned_differences``).
    """
    if baseline_name not in tile_cms:
        raise KeyError(f"baseline {baseline_name!r} not among models: {', '.join(tile_cms)}")
    headline = HEADLINE_CONVENTION[objective]
    order = [baseline_name] + [name for name in tile_cms if name != baseline_name]
    alpha = 0.05
    table = {
        "baseline": baseline_name,
        "objective": objective,
        "headline": headline,
        "order": order,
        "models": {name: _model_row(tile_cms[name], probs_ece.get(name, math.nan), headline) for name in order},
        "differences": compare_to_baseline(tile_cms, baseline_name, n_boot=n_boot, seed=seed, alpha=alpha,
                                           convention=headline),
        "members": {str(name): float(value) for name, value in member_ious.items()},
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "alpha": alpha, "method": BOOTSTRAP_METHOD},
    }
    if tuned_name in tile_cms:
        table["tuned_baseline"] = tuned_name
        table["tuned_differences"] = compare_to_baseline(
            {name: cms for name, cms in tile_cms.items() if name != baseline_name}, tuned_name, n_boot=n_boot,
            seed=seed, alpha=alpha, convention=headline)
    return table


