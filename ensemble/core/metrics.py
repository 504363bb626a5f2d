"""Exact segmentation metrics from confusion matrices, and calibration scores.

Three IoU conventions, each computed from one confusion matrix (rows = truth, columns =
prediction, accumulated with ``bincount`` over all pixels of all tiles):

* ``competition``: what the AN2DL 2024-25 Homework 2 competition scores, exactly
  ``keras.metrics.MeanIoU(num_classes=5, ignore_class=0)``. Pixels whose *true* label is 0
  are dropped; the IoU of every class id 0-4 is computed and the mean runs over the ids whose
  union is non-zero. Predicting a terrain class on an unlabeled pixel is free; predicting 0
  on a labeled pixel misses that pixel and adds a zero term for class 0 to the mean.
* ``labeled``: the same pixels, mean over the terrain classes 1-4 only (AI4Mars papers).
* ``allpixels``: every pixel counts (a terrain class predicted on an unlabeled pixel is a
  false positive), mean over classes 1-4: what a full 5-class mask gets. A diagnostic.

Per class, ``competition`` and ``labeled`` give the same IoU for classes 1-4; they differ
only in which ids the mean runs over.
"""
import numpy as np

from .classes import NUM_CLASSES, TERRAIN_CLASSES, TERRAIN_NAMES

CONVENTIONS = ("competition", "labeled", "allpixels")
#: Columns a model is compared on: the terrain IoUs (in the run's headline convention) and the
#: mean IoU of every convention.
COMPARE_COLUMNS = TERRAIN_NAMES + tuple(f"miou_{c}" for c in CONVENTIONS)


def check_convention(convention):
    """Return ``convention`` if known, else ``ValueError`` listing the valid ones."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown IoU convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    return convention


def confusion_matrix(truth, pred, num_classes=NUM_CLASSES):
    """(C, C) int64 matrix, rows = truth, columns = prediction, via ``bincount``."""
    truth = np.asarray(truth).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    return np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_tile_confusion(truth, pred, num_classes=NUM_CLASSES):
    """(N, C, C) confusion matrices, one per tile, for paired bootstrap over tiles."""
    truth = np.asarray(truth).astype(np.int64).reshape(len(truth), -1)
    pred = np.asarray(pred).astype(np.int64).reshape(len(pred), -1)
    codes = truth * num_classes + pred + (np.arange(len(truth)) * num_classes**2)[:, None]
    counts = np.bincount(codes.ravel(), minlength=len(truth) * num_classes**2)
    return counts.reshape(len(truth), num_classes, num_classes)


def scored_matrix(cm, convention):
    """The confusion matrix restricted to the pixels ``convention`` scores (float64 copy).

    ``competition`` and ``labeled`` drop the pixels whose truth is 0 (row 0); ``allpixels``
    keeps every pixel.
    """
    cm = np.array(cm, dtype=np.float64)
    if check_convention(convention) != "allpixels":
        cm[..., 0, :] = 0
    return cm


def iou_per_class(cm, convention="competition"):
    """IoU of every class id from a confusion matrix; NaN where the class's union is zero."""
    cm = scored_matrix(cm, convention)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(axis=-2) + cm.sum(axis=-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_ious(cms, convention="competition"):
    """Mean IoU in ``convention`` of every confusion matrix of a stack (..., C, C): an array of the leading shape
    (a 0-d array for one matrix), NaN where no class has a union. Vectorised: a bootstrap scores all its
    replicates in one call. See :func:`mean_iou`."""
    values = iou_per_class(cms, convention)
    if convention != "competition":
        values = values[..., list(TERRAIN_CLASSES)]
    finite = np.isfinite(values)
    counts = finite.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(finite, values, 0.0).sum(axis=-1) / counts, np.nan)


def mean_iou(cm, convention="competition"):
    """Mean IoU in ``convention`` of one (C, C) confusion matrix (see the module docstring); NaN when no class
    has a union.

    ``competition`` averages over every class id with a non-zero union (class 0 included,
    where it is predicted on labeled pixels); ``labeled`` and ``allpixels`` over the terrain
    classes 1-4 with a non-zero union.
    """
    if np.ndim(cm) != 2:
        raise ValueError(f"mean_iou takes one (C, C) confusion matrix, got shape {np.shape(cm)}; "
                         "mean_ious takes a stack")
    return float(mean_ious(cm, convention))


def all_mean_ious(cm):
    """``{convention: mean IoU}`` for every convention of :data:`CONVENTIONS`."""
    return {convention: mean_iou(cm, convention) for convention in CONVENTIONS}


def pixel_accuracy(cm, convention="competition"):
    """Share of the pixels ``convention`` scores whose predicted class equals the truth."""
    cm = scored_matrix(cm, convention)
    return float(np.trace(cm) / max(cm.sum(), 1))


def binary_iou(truth_positive, pred_positive, valid=None):
    """IoU of one class as a binary problem; ``valid`` (bool, same shape) masks the pixels to count."""
    truth_positive = np.asarray(truth_positive, dtype=bool)
    pred_positive = np.asarray(pred_positive, dtype=bool)
    if valid is not None:
        truth_positive = truth_positive & valid
        pred_positive = pred_positive & valid
    union = np.logical_or(truth_positive, pred_positive).sum()
    return float(np.logical_and(truth_positive, pred_positive).sum() / union) if union else float("nan")


def _probs_and_truth(probs, truth):
    import torch  # the probability metrics only: the CLI imports the conventions without torch

    probs = torch.as_tensor(probs)
    probs = probs if probs.is_floating_point() else probs.float()
    return probs, torch.as_tensor(np.asarray(truth), dtype=torch.int64)


def _valid_flat(valid, n):
    """Flat bool tensor of the pixels to score (all when ``valid`` is None)."""
    import torch

    if valid is None:
        return torch.ones(n, dtype=torch.bool)
    return torch.as_tensor(np.asarray(valid), dtype=torch.bool).reshape(-1)


def nll(probs, truth, eps=1e-12, valid=None):
    """Mean negative log-likelihood of the true class; ``probs`` (N, C, H, W) or (P, C), ``truth`` (N, H, W) or (P,).

    ``valid`` (same shape as ``truth``, bool) restricts the mean to those pixels.
    """
    import torch

    probs, truth = _probs_and_truth(probs, truth)
    picked = probs.gather(1, truth[:, None])[:, 0].double().reshape(-1)
    keep = _valid_flat(valid, len(picked))
    return float(-torch.log(picked[keep].clamp_min(eps)).mean()) if keep.any() else float("nan")


def expected_calibration_error(probs, truth, bins=15, valid=None):
    """Top-label expected calibration error with ``bins`` equal-width confidence bins.

    Works on (N, C, H, W) probabilities without copying them to another layout or dtype.
    ``valid`` (same shape as ``truth``, bool) restricts it to those pixels.
    """
    import torch

    probs, truth = _probs_and_truth(probs, truth)
    confidence, predicted = probs.max(dim=1)
    keep = _valid_flat(valid, confidence.numel())
    confidence = confidence.reshape(-1)[keep].double()
    correct = (predicted == truth).reshape(-1)[keep].double()
    if len(correct) == 0:
        return float("nan")
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(which, weights=correct, minlength=bins)
    return float((conf_sum - acc_sum).abs().sum() / len(correct))


def background_on_labeled(cm):
    """Share of the labeled pixels (truth 1-4) predicted as class 0."""
    cm = np.asarray(cm, dtype=np.float64)
    labeled = cm[1:].sum()
    return float(cm[1:, 0].sum() / labeled) if labeled else float("nan")
