"""The three IoU conventions: hand-computed cases, and `competition` against keras itself."""
import importlib
import os

import numpy as np
import pytest

from ensemble.core.metrics import (
    CONVENTIONS,
    all_mean_ious,
    binary_iou,
    confusion_matrix,
    expected_calibration_error,
    iou_per_class,
    mean_iou,
    nll,
    pixel_accuracy,
)

# truth / prediction of one 2x4 tile, worked out by hand below
TRUTH = np.array([[0, 0, 1, 1],
                  [2, 2, 2, 4]])
PRED = np.array([[1, 0, 1, 0],
                 [2, 2, 3, 4]])
# Labeled pixels (truth != 0): (1->1) (1->0) (2->2) (2->2) (2->3) (4->4).
#   class 0: tp 0, predicted 1 (on a labeled pixel)  -> IoU 0/1 = 0     (union 1)
#   class 1: tp 1, truth 2, predicted 1              -> IoU 1/2
#   class 2: tp 2, truth 3, predicted 2              -> IoU 2/3
#   class 3: tp 0, truth 0, predicted 1              -> IoU 0/1 = 0
#   class 4: tp 1, truth 1, predicted 1              -> IoU 1
# competition: mean over ids 0-4 with a union = (0 + 1/2 + 2/3 + 0 + 1) / 5
# labeled:     mean over 1-4                       = (1/2 + 2/3 + 0 + 1) / 4
# allpixels: the unlabeled pixels count too: (0->1) adds a false positive to class 1, (0->0) a hit of class 0
#   class 1: tp 1, truth 2, predicted 2 -> 1/3; the others as above -> (1/3 + 2/3 + 0 + 1) / 4
EXPECTED = {
    "competition": (0 + 1 / 2 + 2 / 3 + 0 + 1) / 5,
    "labeled": (1 / 2 + 2 / 3 + 0 + 1) / 4,
    "allpixels": (1 / 3 + 2 / 3 + 0 + 1) / 4,
}


def test_hand_computed_conventions():
    cm = confusion_matrix(TRUTH, PRED)
    for convention in CONVENTIONS:
        assert mean_iou(cm, convention) == pytest.approx(EXPECTED[convention], abs=1e-12), convention
    assert all_mean_ious(cm) == pytest.approx(EXPECTED)
    np.testing.assert_allclose(iou_per_class(cm, "competition"), [0, 1 / 2, 2 / 3, 0, 1])
    np.testing.assert_allclose(iou_per_class(cm, "labeled"), [0, 1 / 2, 2 / 3, 0, 1])
    np.testing.assert_allclose(iou_per_class(cm, "allpixels"), [1 / 3, 1 / 3, 2 / 3, 0, 1])  # class 0: 1 / (2 + 2 - 1)
    assert pixel_accuracy(cm, "competition") == pytest.approx(4 / 6)
    assert pixel_accuracy(cm, "allpixels") == pytest.approx(5 / 8)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    truth = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 1, 2, 1]])  # no 0, 3 or 4 anywhere
    cm = confusion_matrix(truth, pred)
    expected = (2 / 3 + 1 / 2) / 2
    for convention in CONVENTIONS:
        assert mean_iou(cm, convention) == pytest.approx(expected)
    assert np.isnan(iou_per_class(cm)[[0, 3, 4]]).all()


def test_all_background_truth_scores_nothing_in_competition():
    truth = np.zeros((2, 4), dtype=np.int64)
    pred = np.array([[0, 1, 2, 3], [4, 4, 0, 0]])
    cm = confusion_matrix(truth, pred)
    assert np.isnan(mean_iou(cm, "competition")) and np.isnan(mean_iou(cm, "labeled"))
    assert mean_iou(cm, "allpixels") == 0.0  # every terrain class predicted is a false positive


def test_binary_iou_on_valid_pixels():
    truth = np.array([True, True, False, False])
    pred = np.array([True, False, True, True])
    assert binary_iou(truth, pred) == pytest.approx(1 / 4)
    assert binary_iou(truth, pred, valid=np.array([True, True, True, False])) == pytest.approx(1 / 3)
    assert np.isnan(binary_iou(truth, pred, valid=np.zeros(4, dtype=bool)))


def test_ece_and_nll_known_answers():
    # 4 pixels, 2 classes; confidence 0.9 on all, correct on 3 of 4: ECE = |0.9 - 0.75| = 0.15
    probs = np.zeros((1, 2, 1, 4), dtype=np.float32)
    probs[0, 0] = 0.9
    probs[0, 1] = 0.1
    truth = np.array([[[0, 0, 0, 1]]])
    assert expected_calibration_error(probs, truth) == pytest.approx(0.15, abs=1e-6)
    # two bins: confidence 0.9 (all correct) and 0.6 (half correct): (2 * 0.1 + 2 * 0.1) / 4 = 0.1
    probs[0, 0] = [0.9, 0.9, 0.6, 0.6]
    probs[0, 1] = 1 - probs[0, 0]
    truth = np.array([[[0, 0, 0, 1]]])
    assert expected_calibration_error(probs, truth) == pytest.approx(0.1, abs=1e-6)
    valid = np.array([[[True, True, False, False]]])
    assert expected_calibration_error(probs, truth, valid=valid) == pytest.approx(0.1, abs=1e-6)
    assert nll(probs, truth, valid=valid) == pytest.approx(-np.log(0.9), abs=1e-6)
    assert nll(probs, truth) == pytest.approx(-(2 * np.log(0.9) + np.log(0.6) + np.log(0.4)) / 4, abs=1e-6)


def _keras():
    """keras 3 on the torch backend, or skip with the reason."""
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        keras = importlib.import_module("keras")
    except Exception as exc:  # not installed, or no usable backend
        pytest.skip(f"keras is not importable ({type(exc).__name__}: {exc}); install the test extra")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was already imported with the {keras.backend.backend()} backend")
    return keras


def _keras_competition(keras, truth, pred):
    metric = keras.metrics.MeanIoU(num_classes=5, ignore_class=0, sparse_y_pred=True)
    metric.update_state(truth, pred)
    return float(metric.result())


def _edge_cases(rng):
    shape = (6, 8, 16)
    truth = rng.integers(0, 5, shape)
    yield "random", truth, rng.integers(0, 5, shape)
    pred = truth.copy()
    pred[truth > 0] = np.where(rng.random((truth > 0).sum()) < 0.3, 0, truth[truth > 0])
    yield "class 0 predicted on labeled pixels", truth, pred
    no_sand = np.where(truth == 3, 1, truth)
    yield "a class absent from truth and prediction", no_sand, np.where(no_sand == 3, 2, no_sand)
    only_predicted = np.where(truth == 4, 2, truth)
    pred = only_predicted.copy()
    pred[0, :2] = 4
    yield "a class only predicted", only_predicted, pred
    truth = truth.copy()
    truth[:3] = 0  # three all-background truth tiles, predicted anything
    yield "all-background truth tiles", truth, rng.integers(0, 5, shape)
    yield "perfect prediction", truth, truth


def test_competition_equals_keras_mean_iou():
    keras = _keras()
    rng = np.random.default_rng(0)
    for case, truth, pred in _edge_cases(rng):
        ours = mean_iou(confusion_matrix(truth, pred), "competition")
        theirs = _keras_competition(keras, truth, pred)
        assert ours == pytest.approx(theirs, abs=1e-6), case
