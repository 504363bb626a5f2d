"""Reporting layer: paired bootstrap, submission CSV, PNG rendering, comparison report."""
import json

import numpy as np
import pytest
from PIL import Image

from ensemble.core.classes import NUM_CLASSES
from ensemble.core.metrics import COMPARE_COLUMNS, CONVENTIONS, iou_per_class, mean_iou, mean_ious, per_tile_confusion
from ensemble.evaluation.bootstrap import compare_metrics, compare_to_baseline, paired_bootstrap
from ensemble.evaluation.table import build_table
from ensemble.reporting.figures import (
    CLASS_COLORS,
    colorize,
    confusion_png,
    most_different_tiles,
    overlay_sheet,
    write_gray_png,
    write_mask_png,
)
from ensemble.reporting.report import write_report
from ensemble.reporting.submission import SubmissionWriter, read_submission
from ensemble.reporting.text import format_table

H, W = 8, 16


def _noisy(truth, keep, rng):
    """Predictions equal to ``truth`` on a ``keep`` share of pixels, random elsewhere."""
    return np.where(rng.random(truth.shape) < keep, truth, rng.integers(0, NUM_CLASSES, truth.shape))


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, NUM_CLASSES, (40, H, W))
    return truth, _noisy(truth, 0.5, rng), _noisy(truth, 0.9, rng)


def _png_size(path):
    """(channels, height, width) of a decoded PNG."""
    with Image.open(path) as image:
        image.load()
        return len(image.getbands()), image.height, image.width


# --- bootstrap -------------------------------------------------------------------------------

def test_bootstrap_identical_models_give_zero_interval(tiles):
    truth, pred_a, _ = tiles
    cms = per_tile_confusion(truth, pred_a)
    result = paired_bootstrap(cms, cms, mean_ious, n_boot=200)
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_bootstrap_excludes_zero_for_clearly_better_model(tiles):
    truth, pred_a, pred_b = tiles
    cm_a, cm_b = per_tile_confusion(truth, pred_a), per_tile_confusion(truth, pred_b)
    result = paired_bootstrap(cm_a, cm_b, mean_ious, n_boot=200)
    assert 0 < result["low"] <= result["diff"] <= result["high"]


def test_metrics_of_a_stack_equal_the_metrics_of_each_matrix_to_the_bit():
    """The bootstrap scores all replicates in one call: a stack's metrics are each matrix's, exactly, NaN included
    (a class without a union; a matrix without any)."""
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 50, (64, NUM_CLASSES, NUM_CLASSES)).astype(np.float64)
    stack[1, 3, :] = stack[1, :, 3] = 0  # class 3 absent
    stack[2] = 0  # nothing at all
    stack[3, 1:, :] = 0  # only unlabeled pixels: nothing scored but under allpixels
    for convention in CONVENTIONS:
        one_by_one = np.array([mean_iou(cm, convention) for cm in stack])
        np.testing.assert_array_equal(mean_ious(stack, convention), one_by_one)
        np.testing.assert_array_equal(iou_per_class(stack, convention),
                                      np.array([iou_per_class(cm, convention) for cm in stack]))
        np.testing.assert_array_equal(compare_metrics(stack, convention),
                                      np.array([compare_metrics(cm, convention) for cm in stack]))
    assert np.isnan(mean_ious(stack, "labeled")[2]) and np.isnan(mean_iou(stack[2]))
    with pytest.raises(ValueError, match="one \\(C, C\\) confusion matrix"):
        mean_iou(stack)


def test_a_metric_that_is_not_vectorised_is_refused_not_misread(tiles):
    truth, pred_a, pred_b = tiles
    cm_a, cm_b = per_tile_confusion(truth, pred_a), per_tile_confusion(truth, pred_b)
    with pytest.raises(ValueError, match="stack of confusion matrices"):
        paired_bootstrap(cm_a, cm_b, lambda cm: np.trace(cm) / cm.sum(), n_boot=20)  # of one matrix only


def test_compare_to_baseline_matches_paired_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 500, (300, NUM_CLASSES, NUM_CLASSES))
    b = a + np.eye(NUM_CLASSES, dtype=np.int64) * 50
    result = compare_to_baseline({"baseline": a, "ensemble": b}, "baseline", n_boot=200, seed=3)
    assert set(result) == {"ensemble"} and tuple(result["ensemble"]) == COMPARE_COLUMNS
    single = paired_bootstrap(a, b, compare_metrics, n_boot=200, seed=3)
    for i, cell in enumerate(result["ensemble"].values()):
        assert 0 < cell["low"] <= cell["diff"] <= cell["high"]
        assert (cell["diff"], cell["low"], cell["high"]) == (single["diff"][i], single["low"][i], single["high"][i])
    assert result == compare_to_baseline({"baseline": a, "ensemble": b}, "baseline", n_boot=200, seed=3)


# --- submission CSV --------------------------------------------------------------------------

def test_submission_round_trip_row_major(tmp_path):
    y, x = np.mgrid[0:H, 0:W]
    known = (y * W + x) % NUM_CLASSES
    masks = np.stack([known, (known + 1) % NUM_CLASSES, known[::-1]]).astype(np.uint8)
    path = tmp_path / "submission.csv"
    with SubmissionWriter(path, H * W) as writer:
        writer.write([0, 1], masks[:2])
        writer.write([2], masks[2:])
    lines = path.read_text().splitlines()
    assert lines[0] == "id," + ",".join(str(i) for i in range(H * W))
    assert len(lines) == 4 and lines[1].startswith("0,0,1,2,3,4,0,")
    ids, labels = read_submission(path)
    assert ids == ["0", "1", "2"]
    assert labels.dtype == np.uint8 and labels.shape == (3, H * W)
    np.testing.assert_array_equal(labels.reshape(3, H, W), masks)
    assert list(tmp_path.iterdir()) == [path]


def test_submission_failure_leaves_nothing(tmp_path):
    path = tmp_path / "submission.csv"
    with pytest.raises(RuntimeError), SubmissionWriter(path, H * W) as writer:
        writer.write([0], np.zeros((1, H, W), dtype=np.uint8))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_submission_failure_keeps_existing_file(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("previous\n")
    with pytest.raises(ValueError), SubmissionWriter(path, H * W) as writer:
        writer.write([0], np.zeros((1, H, W + 1), dtype=np.uint8))  # wrong pixel count
    assert path.read_text() == "previous\n" and list(tmp_path.iterdir()) == [path]


# --- PNG rendering ---------------------------------------------------------------------------

def test_colorize_uses_fixed_colours():
    mask = np.arange(NUM_CLASSES).reshape(1, -1)
    rgb = colorize(mask)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, NUM_CLASSES, 3)
    np.testing.assert_array_equal(rgb[0], CLASS_COLORS)
    assert len({tuple(c) for c in CLASS_COLORS}) == NUM_CLASSES
    with pytest.raises(ValueError):
        colorize(np.array([[NUM_CLASSES]]))


def test_pngs_decode_with_expected_sizes(tmp_path, tiles):
    truth, pred_a, pred_b = tiles
    write_mask_png(truth[0], tmp_path / "mask.png")
    assert _png_size(tmp_path / "mask.png") == (3, H, W)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "mask.png")), colorize(truth[0]))
    write_gray_png(np.linspace(-1, 2, H * W).reshape(H, W), tmp_path / "gray.png")
    gray = np.asarray(Image.open(tmp_path / "gray.png"))
    assert gray.shape == (H, W) and gray.min() == 0 and gray.max() == 255
    confusion_png(per_tile_confusion(truth, pred_a).sum(axis=0), tmp_path / "cm.png", "baseline")
    channels, height, width = _png_size(tmp_path / "cm.png")
    assert channels == 3 and height >= 5 * 60 and width >= 5 * 60
    images = np.random.default_rng(2).random((3, H, W))
    overlay_sheet(images, truth[:3], pred_a[:3], pred_b[:3], tmp_path / "sheet.png", scale=3)
    channels, height, width = _png_size(tmp_path / "sheet.png")
    assert channels == 3 and width >= 4 * 3 * W and height >= 3 * 3 * H
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert any((sheet == colour).all(axis=2).any() for colour in CLASS_COLORS)


def test_most_different_tiles():
    truth = np.zeros((5, H, W), dtype=np.int64)
    pred_a, pred_b = truth.copy(), truth.copy()
    pred_b[3] = 1  # every pixel differs
    pred_b[1, :2] = 2  # two rows differ
    pred_a[4, :2] = 3  # same count as tile 1, but both wrong: smaller correctness gap
    pred_b[4, :2] = 2
    np.testing.assert_array_equal(most_different_tiles(pred_a, pred_b, truth, 3), [3, 1, 4])
    assert len(most_different_tiles(pred_a, pred_b, truth, 10)) == 5


# --- report ----------------------------------------------------------------------------------

def test_build_table_and_write_report(tmp_path, tiles):
    truth, pred_a, pred_b = tiles
    no_rock = np.where(truth == 4, 0, truth)  # big_rock absent from truth and both predictions
    tile_cms = {
        "baseline": per_tile_confusion(no_rock, np.where(pred_a == 4, 0, pred_a)),
        "argmax": per_tile_confusion(no_rock, np.where(pred_b == 4, 0, pred_b)),
        "stacked": per_tile_confusion(no_rock, no_rock),
    }
    members = {"soil": 0.7, "big_rock": float("nan")}
    table = build_table(tile_cms, {"baseline": 0.12, "argmax": 0.05}, members, n_boot=100, objective="fullmask")
    assert table["order"] == ["baseline", "argmax", "stacked"]
    assert np.isnan(table["models"]["baseline"]["iou"]["big_rock"])
    assert np.isnan(table["models"]["stacked"]["ece"])  # no probabilities given
    assert table["headline"] == "allpixels"
    assert table["models"]["stacked"]["miou"]["allpixels"] == 1.0
    assert table["differences"]["argmax"]["miou_allpixels"]["low"] > 0
    confusion_png(tile_cms["argmax"].sum(axis=0), tmp_path / "confusion_argmax.png", "argmax")
    meta = {"run": "r1", "data_sha": "abc", "split": "val", "n_tiles": 40, "tta": False}
    json_path, md_path = write_report(tmp_path, table, meta)
    report = json.loads(json_path.read_text())
    assert report["table"]["models"]["baseline"]["iou"]["big_rock"] is None
    assert report["table"]["members"]["big_rock"] is None and report["meta"]["run"] == "r1"
    markdown = md_path.read_text()
    for name in table["order"]:
        assert f"| {name} |" in markdown
    assert "n/a" in markdown and "(confusion_argmax.png)" in markdown and "abc" in markdown
    assert "[+" in markdown  # a difference with its interval
    assert "n/a [" not in markdown  # an undefined difference is just n/a
    text = format_table(table)
    assert all(name in text for name in table["order"]) and "n/a" in text
    assert text.splitlines()[0].startswith("objective fullmask")
    assert len({len(line) for line in text.splitlines()[1:6]}) == 1  # fixed width
