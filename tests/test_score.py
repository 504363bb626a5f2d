"""`ensemble score`: submission CSVs and mask arrays against true masks, in the three conventions."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error

from ensemble.cli import main
from ensemble.core.metrics import CONVENTIONS, confusion_matrix, mean_iou
from ensemble.reporting.submission import SubmissionWriter

H, W = 4, 6


@pytest.fixture
def masks():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (7, H, W)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 5, truth.shape)).astype(np.uint8)
    return truth, pred


def _write_csv(path, pred, ids=None):
    ids = [str(i) for i in range(len(pred))] if ids is None else ids
    with SubmissionWriter(path, H * W) as writer:
        writer.write(ids, pred)
    return path


def _score(*args):
    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_score_csv_against_npy_prints_every_convention(tmp_path, masks):
    truth, pred = masks
    np.save(tmp_path / "truth.npy", truth)
    result = _score(_write_csv(tmp_path / "sub.csv", pred), "--masks", tmp_path / "truth.npy", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) == set(CONVENTIONS)
    cm = confusion_matrix(truth, pred)
    for convention in CONVENTIONS:
        assert set(scores[convention]) == {"soil", "bedrock", "sand", "big_rock", "mean"}
        assert scores[convention]["mean"] == pytest.approx(mean_iou(cm, convention))
    text = _score(tmp_path / "sub.csv", "--masks", tmp_path / "truth.npy")
    assert text.exit_code == 0 and all(c in text.output for c in CONVENTIONS) and "7 tiles" in text.output


def test_csv_rows_are_matched_by_kaggle_id(tmp_path, masks):
    truth, pred = masks
    np.save(tmp_path / "truth.npy", truth)
    order = np.array([3, 0, 6, 1, 5, 2, 4])
    shuffled = _write_csv(tmp_path / "shuffled.csv", pred[order], ids=[str(i) for i in order])
    in_order = _write_csv(tmp_path / "sub.csv", pred)
    first = json.loads(_score(shuffled, "--masks", tmp_path / "truth.npy", "--json").output)
    second = json.loads(_score(in_order, "--masks", tmp_path / "truth.npy", "--json").output)
    assert first == second


def test_npz_key_and_kaggle_layout(tmp_path, masks):
    truth, pred = masks
    np.savez(tmp_path / "pred.npz", masks=pred, other=truth)
    images = np.zeros_like(truth)
    np.savez(tmp_path / "kaggle.npz", training_set=np.stack([images, truth], axis=1))
    result = _score(f"{tmp_path / 'pred.npz'}:masks", "--masks", tmp_path / "kaggle.npz", "--json")
    assert result.exit_code == 0, result.output
    expected = mean_iou(confusion_matrix(truth, pred), "competition")
    assert json.loads(result.output)["competition"]["mean"] == pytest.approx(expected)
    perfect = _score(f"{tmp_path / 'pred.npz'}:other", "--masks", tmp_path / "kaggle.npz", "--json")
    assert json.loads(perfect.output)["competition"]["mean"] == 1.0


@pytest.mark.parametrize("case, fragments", [
    ("rows", ("6 predicted tiles", "7 true masks")),
    ("size", ("rows have 20 labels", "4x6")),
    ("ids", ("values outside 0-4",)),
    ("csv", ("not a readable submission CSV",)),
    ("key", ("no key 'nope'", "keys found: masks, other")),
    ("several", ("holds several arrays", ":KEY")),
    ("missing", ("not found",)),
    ("float", ("dtype float64", "integer class ids")),
])
def test_bad_input_is_one_line_exit_2(tmp_path, masks, case, fragments):
    truth, pred = masks
    truth_path = tmp_path / "truth.npy"
    np.save(truth_path, truth)
    np.savez(tmp_path / "pred.npz", masks=pred, other=pred)
    pred_arg = tmp_path / "pred.npy"
    if case == "rows":
        np.save(pred_arg, pred[:6])
    elif case == "size":
        pred_arg = tmp_path / "small.csv"
        with SubmissionWriter(pred_arg, 20) as writer:
            writer.write([str(i) for i in range(7)], np.zeros((7, 4, 5), dtype=np.uint8))
    elif case == "ids":
        bad = pred.astype(np.int64)
        bad[2, 1, 1] = 7
        np.save(pred_arg, bad)
    elif case == "csv":
        pred_arg = tmp_path / "broken.csv"
        pred_arg.write_text("id,0,1\n0,1\n")
    elif case == "key":
        pred_arg = f"{tmp_path / 'pred.npz'}:nope"
    elif case == "several":
        pred_arg = tmp_path / "pred.npz"
    elif case == "missing":
        pred_arg = tmp_path / "absent.npy"
    elif case == "float":
        np.save(pred_arg, pred.astype(np.float64))
    assert_one_line_error(_score(pred_arg, "--masks", truth_path), *fragments)


def test_the_one_mask_array_beside_its_ids_is_the_truth_and_names_match_rows(tmp_path, masks):
    truth, pred = masks
    names = [f"img{i}" for i in range(len(truth))]
    np.savez(tmp_path / "truth.npz", test_ids=np.array(names), test_masks=truth)
    order = [4, 0, 6, 2, 1, 5, 3]
    by_name = _write_csv(tmp_path / "named.csv", pred[order], ids=[names[i] for i in order])
    expected = mean_iou(confusion_matrix(truth, pred), "competition")
    result = _score(by_name, "--masks", tmp_path / "truth.npz", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["competition"]["mean"] == pytest.approx(expected)


@pytest.mark.parametrize("ids, fragments", [
    ([str(i) for i in range(7) if i != 3], ("6 predicted tiles", "7 true masks", "missing ids 3")),
    ([*map(str, range(7)), "9"], ("8 predicted tiles", "ids not in the truth 9")),
    (["0", "1", "1", "2", "3", "4", "5"], ("ids appear more than once: 1",)),
])
def test_missing_extra_and_repeated_ids_are_named(tmp_path, masks, ids, fragments):
    truth, pred = masks
    np.save(tmp_path / "truth.npy", truth)
    rows = np.concatenate([pred, pred])[: len(ids)]
    assert_one_line_error(_score(_write_csv(tmp_path / "sub.csv", rows, ids=ids), "--masks", tmp_path / "truth.npy"),
                          *fragments)
