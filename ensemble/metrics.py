"""Exact segmentation metrics from confusion matrices, and calibration scores.

IoU conventions for the terrain classes 1-4:

* ``kaggle``: every pixel counts; a terrain class predicted on a background pixel is a
  false positive for that class (the competition metric).
* ``labeled``: background pixels of the truth are ignored (the AI4Mars convention).
"""
import numpy as np
import torch

from .classes import NUM_CLASSES, TERRAIN_CLASSES

CONVENTIONS = ("kaggle", "labeled")


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


def iou_per_class(cm, convention="kaggle"):
    """IoU of every class from a confusion matrix; NaN where a class is absent from truth and prediction."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    cm = np.asarray(cm, dtype=np.float64)
    if convention == "labeled":
        cm = cm.copy()
        cm[0, :] = 0  # ignore pixels whose truth is background
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm, convention="kaggle", classes=TERRAIN_CLASSES):
    """Mean IoU over ``classes`` (default the terrain classes 1-4), ignoring absent classes."""
    values = iou_per_class(cm, convention)[list(classes)]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def pixel_accuracy(cm):
    """Share of pixels whose predicted class equals the truth."""
    cm = np.asarray(cm)
    return float(np.trace(cm) / max(cm.sum(), 1))


def binary_iou(truth_positive, pred_positive, valid=None):
    """IoU of one class as a binary problem; ``valid`` masks pixels to count."""
    truth_positive = np.asarray(truth_positive, dtype=bool)
    pred_positive = np.asarray(pred_positive, dtype=bool)
    if valid is not None:
        truth_positive = truth_positive & valid
        pred_positive = pred_positive & valid
    union = np.logical_or(truth_positive, pred_positive).sum()
    return float(np.logical_and(truth_positive, pred_positive).sum() / union) if union else float("nan")


def _probs_and_truth(probs, truth):
    probs = torch.as_tensor(probs)
    probs = probs if probs.is_floating_point() else probs.float()
    return probs, torch.as_tensor(np.asarray(truth), dtype=torch.int64)


def nll(probs, truth, eps=1e-12):
    """Mean negative log-likelihood of the true class; ``probs`` (N, C, H, W), ``truth`` (N, H, W)."""
    probs, truth = _probs_and_truth(probs, truth)
    picked = probs.gather(1, truth[:, None])[:, 0].double()
    return float(-torch.log(picked.clamp_min(eps)).mean())


def expected_calibration_error(probs, truth, bins=15):
    """Top-label expected calibration error with ``bins`` equal-width confidence bins.

    Works on (N, C, H, W) probabilities without copying them to another layout or dtype.
    """
    probs, truth = _probs_and_truth(probs, truth)
    confidence, predicted = probs.max(dim=1)
    confidence = confidence.reshape(-1).double()
    correct = (predicted == truth).reshape(-1).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(which, weights=correct, minlength=bins)
    return float((conf_sum - acc_sum).abs().sum() / max(len(correct), 1))
