"""The input check: image statistics at the training scale against the range of the run's training tiles.

The statistics move the right way under noise, blur, JPEG, a wrong scale and exposure; clean tiles pass;
``predict`` names each out-of-range image on one stderr line (also with ``--quiet``), fills the summary's
``warnings`` column and writes the masks it writes without the check; ``api.predictor()`` keeps one record
per image and issues one :class:`InputWarning`; a run without ``input_stats.json`` says so once; training
writes the file.
"""
import csv
import json
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error
from PIL import Image

from ensemble import api
from ensemble.cli import main
from ensemble.core.corruptions import corrupt
from ensemble.core.errors import EnsembleError
from ensemble.core.imagestats import (
    QUANTILES,
    RULES,
    STATISTICS,
    InputRange,
    InputWarning,
    image_statistics,
    thresholds,
    training_statistics,
)
from ensemble.core.locations import PROJECT_ROOT
from ensemble.core.runfolder import RunFolder
from ensemble.inference.windows import as_image_tensor, to_training_scale

REFERENCE = PROJECT_ROOT / "models" / "reference"
TILE = (64, 128)


@pytest.fixture(scope="module")
def tiles(raw_arrays):
    """48 training tiles of the shared file as float 0-1 (N, 64, 128)."""
    return raw_arrays["training_set"][:480:10, 0].astype(np.float32) / 255


@pytest.fixture(scope="module")
def reference_range():
    return RunFolder(REFERENCE).input_range()


def _median(images, name):
    return float(np.nanmedian(image_statistics(images, TILE)[name]))


def _enlarged(image, factor=2):
    pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
    return np.asarray(pixels.resize((image.shape[1] * factor, image.shape[0] * factor), Image.BILINEAR),
                      dtype=np.float32) / 255


def test_statistics_move_the_right_way(tiles):
    rng = np.random.default_rng(0)
    noisy = np.clip(tiles + rng.normal(0, 8 / 255, tiles.shape), 0, 1).astype(np.float32)
    assert _median(noisy, "noise") > _median(tiles, "noise") + 3  # grey levels
    assert _median(noisy, "detail") > _median(tiles, "detail") + 0.5
    blurred = corrupt(tiles, "gaussian_blur", 3)
    assert _median(blurred, "detail") < _median(tiles, "detail") - 1.5
    assert _median(blurred, "sharpness") < _median(tiles, "sharpness") - 0.8
    for severity in (1, 3):  # quality 90 and 50: high-frequency DCT coefficients quantized to 0 on JPEG's grid
        assert _median(corrupt(tiles, "jpeg", severity), "jpeg") > _median(tiles, "jpeg") + 0.1
    enlarged = np.stack([_enlarged(t) for t in tiles[:8]])  # an image 2x too large for --scale 1
    assert _median(enlarged, "detail") < _median(tiles[:8], "detail") - 2
    small = to_training_scale(as_image_tensor(tiles[0]), 2.0).numpy()  # a tile given with --scale 2
    assert image_statistics(small, TILE)["extent"][0] == 0.5 and _median(tiles, "extent") == 1.0
    dark = tiles * 0.5
    for name in ("p1", "p50", "p99"):
        assert _median(dark, name) < _median(tiles, name) or _median(tiles, name) < 2
    stats = image_statistics(tiles, TILE)
    assert (stats["p1"] <= stats["p50"]).all() and (stats["p50"] <= stats["p99"]).all()


def test_batch_equals_single_images_and_uint8_equals_float(tiles):
    batch = image_statistics(tiles[:5], TILE)
    for i in range(5):
        single = image_statistics(tiles[i], TILE)
        for name in STATISTICS:
            assert single[name][0] == pytest.approx(batch[name][i], rel=1e-6), name
    as_uint8 = image_statistics(np.round(tiles[:5] * 255).astype(np.uint8), TILE)
    for name in STATISTICS:
        assert as_uint8[name] == pytest.approx(batch[name], rel=1e-5, abs=1e-6), name


def test_tiny_images_give_nan_and_no_finding(reference_range):
    stats = image_statistics(np.full((2, 5), 0.2, dtype=np.float32), TILE)
    assert np.isnan(stats["noise"][0]) and np.isnan(stats["detail"][0]) and np.isnan(stats["jpeg"][0])
    (check,) = reference_range.check(stats)
    assert [f.statistic for f in check.findings] == ["extent"]  # NaN is never out of range; the size is


def test_clean_validation_tiles_pass(raw_arrays, reference_range):
    """Under 2 % of the reference run's validation tiles are flagged (docs/results.md, Input warnings)."""
    val_idx = RunFolder(REFERENCE).manifest()["split"]["val_indices"]
    checks = reference_range.check(image_statistics(raw_arrays["training_set"][val_idx, 0], TILE))
    assert sum(not c.ok for c in checks) / len(checks) < 0.02


def test_training_statistics_file_round_trips(tiles):
    content = training_statistics(tiles, TILE)
    json.dumps(content, allow_nan=False)  # plain JSON: an unchecked side is null, not Infinity
    assert content["tiles"] == len(tiles) and list(content["statistics"]) == list(STATISTICS)
    for name, entry in content["statistics"].items():
        assert entry["values"] == sorted(entry["values"]), name
        low = -np.inf if entry["low"] is None else entry["low"]
        high = np.inf if entry["high"] is None else entry["high"]
        assert (low, high) == thresholds(name, dict(zip(QUANTILES, entry["values"]))), name
        rule, spread = RULES[name], entry["values"][5] - entry["values"][1]  # q99 - q01
        if rule.fixed is None and rule.low is not None:
            assert low == pytest.approx(entry["values"][1] - rule.low * spread), name
    checks = InputRange(content).check(image_statistics(tiles, TILE))
    assert len(checks) == len(tiles) and all(c.index == i for i, c in enumerate(checks))
    with pytest.raises(ValueError, match="stats.json: not a readable input-statistics file.*newer"):
        InputRange({**content, "format_version": 99}, "stats.json")


def _image_folder(folder, raw_arrays):
    """clean.png (a test tile in range), noisy.png (noise 10 grey levels), big.png (a tile enlarged 2x)."""
    folder.mkdir()
    tile = raw_arrays["test_set"][0]
    rng = np.random.default_rng(0)
    Image.fromarray(tile).save(folder / "clean.png")
    noisy = np.clip(raw_arrays["test_set"][1] + rng.normal(0, 10, tile.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(folder / "noisy.png")
    Image.fromarray(raw_arrays["test_set"][2]).resize((256, 128), Image.BILINEAR).save(folder / "big.png")
    return folder


def _predict(run, images, out, *extra):
    return CliRunner().invoke(main, ["predict", "--run", str(run), "--strategy", "baseline", "--engine", "torch",
                                     "--images", str(images), "--masks", str(out / "masks"), "--summary",
                                     str(out / "summary.csv"), *extra])


def _masks(folder):
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def _summary(path):
    with open(path, newline="") as fh:
        return {row["id"]: row["warnings"] for row in csv.DictReader(fh)}


def test_predict_warns_per_image_and_keeps_the_masks(raw_arrays, tmp_path):
    images = _image_folder(tmp_path / "images", raw_arrays)
    checked = _predict(REFERENCE, images, tmp_path / "checked", "--quiet")  # warnings are not progress
    assert checked.exit_code == 0, checked.output
    lines = checked.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), lines
    noisy = next(line for line in lines if "noisy.png" in line)
    assert "noise " in noisy and "grey levels, training tiles up to " in noisy and "a noisy image?" in noisy
    assert noisy.index("noise ") < noisy.index("(also out of range: detail ")  # the farthest out first
    big = next(line for line in lines if "big.png" in line)
    assert "detail " in big and "try --scale 2" in big
    warned = _summary(tmp_path / "checked" / "summary.csv")
    assert warned["clean"] == "" and warned["noisy"] in noisy and warned["big"] in big

    unchecked_run = tmp_path / "run"  # the same run without the statistics file: nothing checked, said once
    shutil.copytree(REFERENCE, unchecked_run, ignore=shutil.ignore_patterns("cache", "input_stats.json"))
    unchecked = _predict(unchecked_run, images, tmp_path / "unchecked")
    assert unchecked.exit_code == 0, unchecked.output
    said = [line for line in unchecked.stderr.splitlines() if "input_stats.json" in line]
    assert len(said) == 1 and "not checked" in said[0] and "warning:" not in unchecked.stderr
    assert set(_summary(tmp_path / "unchecked" / "summary.csv").values()) == {""}
    masks, same = _masks(tmp_path / "checked" / "masks"), _masks(tmp_path / "unchecked" / "masks")
    assert set(masks) == {"clean", "noisy", "big"} and all(np.array_equal(masks[k], same[k]) for k in masks)


def test_predict_names_a_wrong_scale(raw_arrays, tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(raw_arrays["test_set"][0]).save(path)
    result = _predict(REFERENCE, path, tmp_path, "--scale", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"warning: {path}: extent 0.50 tiles, training tiles down to 0.75: looks 2x too "
                                     "small for --scale 2: try --scale 1")


def test_changed_statistics_file_is_refused(raw_arrays, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run, ignore=shutil.ignore_patterns("cache"))
    path = run / "input_stats.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 1 '))
    images = _image_folder(tmp_path / "images", raw_arrays)
    assert_one_line_error(_predict(run, images, tmp_path), "input_stats.json", "sha256")


def test_api_predictor_records_and_warns(raw_arrays):
    batch = raw_arrays["test_set"][:3].copy()
    batch[1] = np.clip(batch[1] + np.random.default_rng(0).normal(0, 10, batch[1].shape), 0, 255)
    predictor = api.predictor(REFERENCE, "baseline", engine="torch")
    with pytest.warns(InputWarning, match=r"1 of 3 images are unlike the run's training tiles.*image 1: noise"):
        masks = predictor.predict(batch)
    assert [c.ok for c in predictor.input_checks_] == [True, False, True]
    assert predictor.input_checks_[1].findings[0].statistic == "noise"
    assert [c.ok for c in predictor.check(batch)] == [True, False, True]  # checks without predicting
    plain = api.predictor(REFERENCE, "baseline", engine="torch", check_inputs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(plain.predict(batch), masks)  # the check never changes a mask
    assert plain.input_checks_ is None
    enlarged = _enlarged(batch[0].astype(np.float32) / 255)
    with pytest.warns(InputWarning, match="detail"):
        predictor.predict([enlarged, batch[2]])  # images of any size: checked at the training scale
    assert [c.ok for c in predictor.input_checks_] == [False, True]


def test_check_without_statistics_file_is_refused(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run, ignore=shutil.ignore_patterns("cache", "input_stats.json", "control",
                                                                  "members", "baseline_1", "fusion"))
    from ensemble.inference import Predictor

    predictor = Predictor(run, "baseline", engine="torch", check_inputs=True)
    assert predictor.input_range is None
    with pytest.raises(EnsembleError, match="input_stats.json: not found, so the inputs cannot be checked"):
        predictor.check(np.zeros((1, 64, 128), dtype=np.uint8))


def test_training_records_the_statistics(tiny_run, subset_path):
    from ensemble.core.data import load_data

    folder = RunFolder(tiny_run)
    manifest = folder.manifest()
    folder.verify(folder.input_stats_path)
    assert "input_stats.json" in manifest["checksums"]
    data = load_data(subset_path)
    recorded = json.loads(folder.input_stats_path.read_text())
    assert recorded == json.loads(json.dumps(training_statistics(data.images, data.tile_shape,
                                                                 manifest["split"]["train_indices"])))
    assert recorded["tiles"] == len(manifest["split"]["train_indices"])
