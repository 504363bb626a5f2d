"""`evaluate` and `predict` on a tiny real run: report files, submission round trip, PNG input, streaming."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import fused_copy, predict_peak_mb
from PIL import Image

from ensemble.core.data import load_data, open_npz, tile_ids
from ensemble.core.errors import DataError, EnsembleError, RunError
from ensemble.core.metrics import confusion_matrix, mean_iou
from ensemble.core.runfolder import RunFolder
from ensemble.evaluation.crossfit import cross_fitted_logits, fold_assignment
from ensemble.evaluation.evaluate import evaluate_run
from ensemble.inference import Predictor, cached_val_logits
from ensemble.inference.images import load_images
from ensemble.predict import predict_run
from ensemble.reporting.submission import read_submission
from fusion import get_fuser, load_fuser

H, W = 64, 128
#: Tiles of the streaming test, compared with an eighth of them (about 15 s on one thread);
#: MARS_STREAM_TILES=10000 checks the full claim (about 2 min): memory stays flat while all
#: probabilities would take 1.6 GB.
STREAM_TILES = int(os.environ.get("MARS_STREAM_TILES", "1024"))


@pytest.fixture(scope="module")
def fused_run(tiny_run, subset_path, tmp_path_factory):
    """A copy of the session's tiny run (5 width-4 members + baseline) with argmax and learned fusers."""
    return fused_copy(tiny_run, subset_path, tmp_path_factory.mktemp("evaluate"), learned_epochs=3)


@pytest.fixture(scope="module")
def test_images(subset_path):
    """The subset's 40 test tiles, normalised, with their ids."""
    return load_images(subset_path)


def _member_labels(run, strategy, images, batch_size):
    logits = Predictor(run, None, batch_size=batch_size).predict_member_logits(images)
    return load_fuser(run / "fusion" / f"{strategy}.pt").predict(logits).numpy()


def test_evaluate_writes_report(fused_run, subset_path, tmp_path):
    out = tmp_path / "evaluation"
    result = evaluate_run(fused_run, data=subset_path, out=out, n_boot=50)
    assert result["out"] == str(out)
    report = json.loads((out / "report.json").read_text())
    assert report["table"]["order"] == ["baseline", "baseline_bias", "argmax", "learned"]
    assert result["table"]["order"] == report["table"]["order"]
    meta = report["meta"]
    assert meta["fusers_fitted_on"].startswith("cross-fitted: 5 folds of validation rover stops")
    assert meta["cross_fit_folds"] == 5 and meta["split"] == "val"
    assert all(info["same_tiles"] for info in meta["fuser_fit_tiles"].values())
    assert meta["differences"]["strategy"] == "learned" and len(meta["differences"]["tile_ids"]) == 8
    assert set(report["table"]["members"]) == {"background", "soil", "bedrock", "sand", "big_rock"}
    for name in ("baseline", "argmax", "learned"):
        assert (out / f"confusion_{name}.png").stat().st_size > 0
        assert report["table"]["models"][name]["ece"] is not None
    with Image.open(out / "differences.png") as sheet:
        assert sheet.size[0] > 4 * W
    markdown = (out / "report.md").read_text()
    assert "| learned |" in markdown and "(differences.png)" in markdown and "(confusion_argmax.png)" in markdown
    # the argmax row is the argmax of the cached member logits of the validation tiles
    data = load_data(subset_path)
    logits, _, val_idx = cached_val_logits(fused_run, data, tile_ids(data))
    terrain_pred = np.asarray(logits)[:, 1:].argmax(axis=1) + 1  # competition run: class 0 never predicted
    cm = confusion_matrix(data.masks[val_idx], terrain_pred)
    assert report["table"]["objective"] == "competition" and meta["objective"] == "competition"
    assert report["table"]["models"]["argmax"]["miou"]["competition"] == pytest.approx(mean_iou(cm, "competition"))
    for name in ("baseline", "argmax", "learned"):
        assert report["table"]["models"][name]["background_on_labeled"] == 0


def test_evaluate_scores_the_bias_tuned_baseline_cross_fitted(fused_run, subset_path, tmp_path):
    result = evaluate_run(fused_run, data=subset_path, out=tmp_path / "evaluation", n_boot=50)
    table = result["table"]
    # the row is the baseline's logits through a BiasFuser, cross-fitted over evaluate's folds
    data = load_data(subset_path)
    val_idx = np.asarray(RunFolder(fused_run).manifest()["split"]["val_indices"])
    truth, ids = data.masks[val_idx], tile_ids(data)[val_idx]
    baseline_logits = Predictor(fused_run, "baseline").predict_logits(data.images[val_idx])
    folds = fold_assignment(data.groups[val_idx], 5, 0)
    tuned = cross_fitted_logits(get_fuser("bias", seed=0), baseline_logits, truth, folds, ids)
    assert not np.array_equal(tuned.argmax(1), baseline_logits.argmax(1))  # the offsets moved some pixels
    cm = confusion_matrix(truth, tuned.argmax(1))
    assert table["models"]["baseline_bias"]["miou"]["competition"] == pytest.approx(mean_iou(cm, "competition"))
    assert table["models"]["baseline_bias"]["background_on_labeled"] == 0
    # every other model is compared with it too, and the markdown says so
    assert table["tuned_baseline"] == "baseline_bias" and set(table["tuned_differences"]) == {"argmax", "learned"}
    learned = table["tuned_differences"]["learned"]["miou_competition"]
    expected = (table["models"]["learned"]["miou"]["competition"]
                - table["models"]["baseline_bias"]["miou"]["competition"])
    assert learned["diff"] == pytest.approx(expected) and learned["low"] <= learned["diff"] <= learned["high"]
    assert "## Differences to the bias-tuned baseline" in (tmp_path / "evaluation" / "report.md").read_text()


def test_in_sample_evaluation_differs_only_in_fitted_fusers(fused_run, subset_path, tmp_path):
    cross = evaluate_run(fused_run, data=subset_path, out=tmp_path / "cross", n_boot=20)["table"]["models"]
    result = evaluate_run(fused_run, data=subset_path, out=tmp_path / "same", n_boot=20, cross_fit=0)
    same = result["table"]["models"]
    assert result["meta"]["fusers_fitted_on"].startswith("validation split (same tiles")
    assert same["baseline"] == cross["baseline"] and same["argmax"] == cross["argmax"]  # nothing fitted
    assert same["baseline_bias"] != cross["baseline_bias"]  # tuned in-sample vs cross-fitted
    assert same["learned"]["miou"]["competition"] != cross["learned"]["miou"]["competition"]


@pytest.mark.parametrize("folds, fragment", [(1, "at least 2 folds"), (500, "at least 500 validation groups")])
def test_impossible_cross_fit_is_a_clear_error(fused_run, subset_path, folds, fragment):
    with pytest.raises(EnsembleError, match=f"--cross-fit {folds}: .*{fragment}"):
        evaluate_run(fused_run, data=subset_path, cross_fit=folds)


def test_fold_assignment_keeps_groups_whole():
    groups = np.repeat(np.arange(23), np.arange(1, 24))
    folds = fold_assignment(groups, 5, seed=3)
    assert set(folds) == set(range(5))
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert np.array_equal(folds, fold_assignment(groups, 5, seed=3))
    with pytest.raises(ValueError, match="at least 5 validation groups, got 4"):
        fold_assignment(np.arange(4), 5)


def test_cross_fitted_fold_comes_from_a_fuser_that_never_saw_it():
    import torch

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 5, 8, 8)).astype(np.float32)
    masks = rng.integers(0, 5, (12, 8, 8))
    folds = np.arange(12) % 3
    fuser = get_fuser("calibrated", seed=0)
    fused = cross_fitted_logits(fuser, logits, masks, folds, tile_ids=np.arange(12))
    held_out = folds == 1
    alone = get_fuser("calibrated", seed=0).fit(logits[~held_out], masks[~held_out])
    expected = alone.predict_logits(torch.from_numpy(logits[held_out])).numpy()
    np.testing.assert_allclose(fused[held_out], expected, rtol=1e-6, atol=1e-6)
    assert not fuser.is_fitted()  # the strategy's own fuser is left alone


def test_evaluate_default_out_and_flip(fused_run, subset_path):
    result = evaluate_run(fused_run, data=subset_path, tta="flip", n_boot=20)
    assert result["out"] == str(fused_run / "evaluation")
    assert json.loads((fused_run / "evaluation" / "report.json").read_text())["meta"]["tta"] == "flip"


def test_evaluate_without_fusers(fused_run, subset_path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fused_run, run, ignore=shutil.ignore_patterns("fusion"))
    with pytest.raises(RunError, match=r"ensemble fuse --run .* --strategy all"):
        evaluate_run(run, data=subset_path)


def test_evaluate_without_baseline(fused_run, subset_path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fused_run, run, ignore=shutil.ignore_patterns("baseline"))
    with pytest.raises(RunError, match="baseline"):
        evaluate_run(run, data=subset_path)


def test_predict_matches_fuser(fused_run, subset_path, test_images, tmp_path):
    out = tmp_path / "sub.csv"
    result = predict_run(fused_run, "learned", data=subset_path, out=out, batch_size=16,
                         png_dir=tmp_path / "png", uncertainty_dir=tmp_path / "unc")
    assert result["rows"] == 40 and result["out"] == str(out) and result["strategy"] == "learned"
    header = out.open().readline().rstrip("\n").split(",")
    assert header[0] == "id" and header[1:] == [str(i) for i in range(H * W)]
    ids, labels = read_submission(out)
    assert ids == [str(i) for i in range(40)]
    images, _ = test_images
    assert np.array_equal(labels.reshape(-1, H, W), _member_labels(fused_run, "learned", images, 16))
    assert len(list((tmp_path / "png").glob("*.png"))) == 40
    with Image.open(tmp_path / "png" / "7.png") as mask:
        assert mask.mode == "RGB" and mask.size == (W, H)
    for kind in ("entropy", "disagreement"):
        assert len(list((tmp_path / "unc").glob(f"*_{kind}.png"))) == 40
        with Image.open(tmp_path / "unc" / f"0_{kind}.png") as gray:
            assert gray.mode == "L" and gray.size == (W, H)


def test_stacked_and_one_by_one_give_the_same_result(fused_run, subset_path, test_images, tmp_path):
    from click.testing import CliRunner

    from ensemble.cli import main
    from ensemble.inference import resolve_stack

    images, _ = test_images
    stacked = Predictor(fused_run, None, stack=True).predict_member_logits(images)
    one_by_one = Predictor(fused_run, None, stack=False).predict_member_logits(images)
    np.testing.assert_allclose(stacked, one_by_one, rtol=0, atol=1e-4)
    labels = {}
    for flag in ([], ["--stack"], ["--no-stack"]):
        out = tmp_path / f"sub{'-'.join(flag)}.csv"
        args = ["predict", "--run", str(fused_run), "--data", str(subset_path), "--out", str(out), "--quiet", *flag]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        labels[tuple(flag)] = read_submission(out)[1]
    assert (labels[("--stack",)] == labels[("--no-stack",)]).mean() > 0.999  # only exact ties could differ
    assert np.array_equal(labels[()], labels[("--no-stack",)])  # the CPU default: one by one
    # the default layout: one by one on the CPU with either engine (measured faster there), stacked on a GPU
    assert [resolve_stack(None, d) for d in ("cpu", "cuda", "cuda:1")] == [False, True, True]
    assert resolve_stack(True, "cpu") and not resolve_stack(False, "cuda")


def test_predict_baseline(fused_run, subset_path, test_images, tmp_path):
    out = tmp_path / "base.csv"
    predict_run(fused_run, "baseline", data=subset_path, out=out, uncertainty_dir=tmp_path / "unc")
    images, _ = test_images
    logits = Predictor(fused_run, "baseline").predict_logits(images)
    assert np.array_equal(read_submission(out)[1].reshape(-1, H, W), logits.argmax(axis=1))
    assert len(list((tmp_path / "unc").glob("*_entropy.png"))) == 40
    assert not list((tmp_path / "unc").glob("*_disagreement.png"))


def test_predict_unknown_strategy_lists_available(fused_run, subset_path, tmp_path):
    with pytest.raises(EnsembleError, match=r"it serves: argmax, learned, baseline.*ensemble fuse .*calibrated"):
        predict_run(fused_run, "calibrated", data=subset_path, out=tmp_path / "x.csv")
    with pytest.raises(EnsembleError, match=r"'nonsense' is not a strategy; valid strategies of .*: argmax, learned, "
                                            r"baseline$"):
        predict_run(fused_run, "nonsense", data=subset_path, out=tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def _write_pngs(folder, images, names):
    folder.mkdir()
    for image, name in zip(images, names):
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / name)


def test_png_folder_input(fused_run, test_images, tmp_path):
    images, _ = test_images
    names = ["b.png", "a.png", "c.png"]
    _write_pngs(tmp_path / "tiles", images[:3], names)
    loaded, ids = load_images(tmp_path / "tiles")
    assert ids == ["a", "b", "c"] and np.array_equal(loaded, images[[1, 0, 2]])
    out = tmp_path / "png.csv"
    predict_run(fused_run, "argmax", images=tmp_path / "tiles", out=out)
    got_ids, labels = read_submission(out)
    assert got_ids == ["a", "b", "c"]
    assert np.array_equal(labels.reshape(-1, H, W), _member_labels(fused_run, "argmax", images[[1, 0, 2]], 64))


def test_png_modes_read_as_gray(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    gray = np.arange(H * W, dtype=np.uint32).reshape(H, W) % 256
    Image.fromarray(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)).save(folder / "rgb.png")
    Image.fromarray((gray * 257).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.zeros_like(gray)]).astype(np.uint8)).save(folder / "rgba.png")
    images, ids = load_images(folder)
    assert ids == ["rgb", "rgba", "sixteen"] and images.dtype == np.float32
    for image in images:
        assert np.array_equal(np.round(image * 255), gray)


def test_png_folder_errors(fused_run, test_images, tmp_path):
    images, _ = test_images
    _write_pngs(tmp_path / "mixed", [images[0], images[1][:32, :64]], ["a.png", "b.png"])
    with pytest.raises(EnsembleError, match=r"64x128 tiles.*b\.png is 32x64"):  # a CSV needs the run's tiles
        predict_run(fused_run, "argmax", images=tmp_path / "mixed", out=tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_images(tmp_path / "empty")
    _write_pngs(tmp_path / "other", images[:1], ["a.png"])
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="notes.txt"):
        load_images(tmp_path / "other")
    _write_pngs(tmp_path / "broken", images[:1], ["a.png"])
    (tmp_path / "broken" / "z.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"z\.png.*not a decodable PNG"):
        load_images(tmp_path / "broken")
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(tmp_path / "broken" / "z.png", format="JPEG")
    with pytest.raises(DataError, match=r"z\.png.*not a PNG file \(it is JPEG\)"):
        load_images(tmp_path / "broken")
    assert not (tmp_path / "x.csv").exists()


def test_wrong_tile_size_refused(fused_run, write_npz, tmp_path):
    path = write_npz("small.npz", images=np.zeros((3, 32, 64), dtype=np.uint8))
    with pytest.raises(EnsembleError, match="64x128 tiles.*32x64"):
        predict_run(fused_run, "argmax", images=path, out=tmp_path / "x.csv")
    with pytest.raises(DataError, match="no 'test_set' or 'images' key to predict.*keys found: training_set"):
        load_images(write_npz("other.npz", training_set=np.zeros((2, 2, H, W), dtype=np.uint8)))


def test_predict_reads_only_the_tiles_it_predicts(write_npz):
    """``test_set`` is decompressed alone: the training tiles of a Kaggle file are not read for predict."""
    path = write_npz("kaggle.npz", training_set=np.zeros((4, 2, H, W), dtype=np.uint8),
                     test_set=np.full((3, H, W), 255, dtype=np.uint8))
    assert sorted(open_npz(path, keys=("test_set", "images"))) == ["test_set"]
    assert sorted(open_npz(path)) == ["test_set", "training_set"]
    images, ids = load_images(path)
    assert images.shape == (3, H, W) and float(images.min()) == 1.0 and ids == ["0", "1", "2"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_predict_streams_with_flat_memory(fused_run, subset_path, write_npz, tmp_path):
    """Predicting 8x more tiles raises the peak memory of ``predict`` only by the extra raw uint8 input
    (8 KB a tile), not by anything held for every tile at once.

    Each tile count runs in a fresh process (same batches, same warm-up; :func:`conftest.predict_peak_mb`):
    measured, the two peaks differ by the extra input to 0.2 MB, run after run. Holding every tile's float32 image
    would add 32 KB a tile (28 MB here), every tile's probabilities or member logits 160 KB (140 MB): the
    bound, input + 16 MB, catches both.
    """
    raw = np.load(subset_path)["test_set"]
    small, big = STREAM_TILES // 8, STREAM_TILES
    warm = write_npz("warm.npz", images=np.resize(raw, (32, H, W)))
    peaks = {}
    for n in (small, big):
        path = write_npz(f"{n}.npz", images=np.resize(raw, (n, H, W)))
        out = tmp_path / f"{n}.csv"
        result = predict_peak_mb(fused_run, warm, path, options={"batch_size": 16}, outputs={"out": out},
                                 timeout=1800)
        assert result["rows"] == n and out.stat().st_size > n * 2 * H * W
        peaks[n] = result
    growth_mb = peaks[big]["peak_mb"] - peaks[small]["peak_mb"]
    input_mb = (big - small) * H * W / 2**20
    probs_mb = (big - small) * 5 * H * W * 4 / 2**20  # what holding all probabilities would add
    print(f"{small} -> {big} tiles ({peaks[big]['seconds']:.1f} s): peak {peaks[small]['peak_mb']:.1f} -> "
          f"{peaks[big]['peak_mb']:.1f} MB above the start, +{growth_mb:.1f} MB (extra input {input_mb:.1f} MB; "
          f"all probabilities would add {probs_mb:.0f} MB)")
    assert growth_mb < input_mb + 16, peaks


def test_predictor_serves_arrays_like_the_csv(fused_run, subset_path, tmp_path):
    """The notebook API: one Predictor, arrays in (uint8 or float), masks and probabilities out, no files."""
    from ensemble import api

    raw = np.load(subset_path)["test_set"][:12]  # uint8 0-255
    predictor = api.predictor(run=str(fused_run), strategy="learned", device="cpu")
    masks = predictor.predict(raw)
    assert masks.shape == (12, H, W) and masks.dtype == np.uint8 and (masks > 0).all()  # competition run
    assert np.array_equal(masks, predictor.predict(raw.astype(np.float32) / 255))
    probs = predictor.predict_proba(raw)
    assert probs.shape == (12, 5, H, W) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs[:, 0] == 0).all() and np.array_equal(probs.argmax(axis=1), masks)
    assert np.array_equal(masks, _member_labels(fused_run, "learned", raw.astype(np.float32) / 255, 16))
    result = api.predict(run=str(fused_run), strategy="learned", images=raw, out=str(tmp_path / "a.csv"), quiet=True)
    ids, labels = read_submission(result["out"])
    assert ids == [str(i) for i in range(12)] and np.array_equal(labels.reshape(-1, H, W), masks)
    baseline = api.predictor(run=str(fused_run), strategy="baseline", device="cpu")
    assert baseline.predict(raw).shape == (12, H, W) and baseline.fuser is None
    assert predictor.predict(raw[:, :32]).shape == (12, 32, W)  # other sizes: sliding windows
    assert np.array_equal(predictor.predict(raw[0]), masks[0])  # one image: one mask


def test_robustness_benchmark_scores_corrupted_tiles_as_predict_would(fused_run, subset_path, tmp_path):
    """The benchmark's rows are the run's own predictions of the corrupted tiles: the baseline's confusion matrices
    equal those of the Predictor on the tiles corrupted by hand, and a resampled tile's batched logits equal the
    sliding-window logits of ``predict --scale`` on the resized image."""
    from ensemble.core.corruptions import corrupt, get_corruption
    from ensemble.core.metrics import per_tile_confusion
    from ensemble.evaluation.robustness import corrupted_tiles

    out = tmp_path / "evaluation"
    names = ["jpeg", "upsample_bicubic"]
    result = evaluate_run(fused_run, data=subset_path, out=out, n_boot=50, robustness=True, corruptions=names)
    robustness = result["table"]["robustness"]
    best = result["table"]["best_strategy"]
    assert list(robustness["models"]) == list(dict.fromkeys(["baseline", "baseline_bias", best]))
    for model, entry in robustness["models"].items():
        assert entry["clean"] == pytest.approx(result["table"]["models"][model]["miou"]["competition"])
        assert [(r["corruption"], r["severity"]) for r in entry["rows"]] == [(n, s) for n in names for s in (1, 2, 3)]
        assert entry["all"]["n"] == 6 and entry["held_out"] is None
        assert entry["all"]["mpc"] == pytest.approx(np.mean([r["miou"] for r in entry["rows"]]))
        for row in entry["rows"]:
            assert row["drop"]["low"] <= row["drop"]["diff"] <= row["drop"]["high"]
            assert row["drop"]["diff"] == pytest.approx(row["miou"] - entry["clean"])
    assert (out / "robustness.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "## Robustness" in markdown and "## Robustness of baseline" in markdown

    data = load_data(subset_path)
    val_idx = np.asarray(RunFolder(fused_run).manifest()["split"]["val_indices"])
    images, truth = data.images[val_idx], data.masks[val_idx]
    predictor = Predictor(fused_run, "baseline", engine="torch")
    by_hand = per_tile_confusion(truth, predictor.predict(corrupt(images, "jpeg", 2, seed=0)))
    row = next(r for r in robustness["models"]["baseline"]["rows"] if r["corruption"] == "jpeg" and r["severity"] == 2)
    assert row["miou"] == pytest.approx(mean_iou(by_hand.sum(axis=0), "competition"))

    scale = get_corruption("upsample_bicubic").scale(2)
    resized = corrupt(images[:3], "upsample_bicubic", 2, seed=0)
    windows = Predictor(fused_run, "baseline", engine="torch", scale=scale)
    stitched = np.concatenate([windows.stitched_source_logits(image).numpy() for image in resized])
    batched = predictor.predict_source_logits(corrupted_tiles(images[:3], "upsample_bicubic", 2, seed=0))
    np.testing.assert_allclose(batched, stitched, rtol=1e-5, atol=1e-5)


def test_the_benchmark_scores_the_students_teacher_once_and_the_served_default_last():
    from ensemble.evaluation.robustness import robust_models

    base = ["baseline", "baseline_bias"]
    assert robust_models("stacked") == [*base, "stacked"]
    assert robust_models("stacked", teacher="vote") == [*base, "stacked"]  # no student: no teacher
    assert robust_models("stacked", student=True, teacher="vote") == [*base, "student", "student_bias", "vote",
                                                                       "stacked"]
    assert robust_models("vote", student=True, teacher="vote") == [*base, "student", "student_bias", "vote"]
    assert robust_models("student_bias", student=True) == [*base, "student", "student_bias"]


def test_evaluate_without_robustness_removes_an_earlier_benchmark_figure(fused_run, subset_path, tmp_path):
    out = tmp_path / "evaluation"
    out.mkdir()
    (out / "robustness.png").write_bytes(b"stale")
    evaluate_run(fused_run, data=subset_path, out=out, n_boot=20)
    assert not (out / "robustness.png").exists()
    assert "robustness" not in (out / "report.md").read_text().lower()


def test_unknown_corruption_is_a_one_line_error(fused_run, subset_path):
    from click.testing import CliRunner
    from conftest import assert_one_line_error

    from ensemble.cli import main

    result = CliRunner().invoke(main, ["evaluate", "--run", str(fused_run), "--data", str(subset_path),
                                       "--robustness", "--corruptions", "jpeg,fog"])
    assert_one_line_error(result, "--corruptions", "'fog'", "gaussian_noise")


def test_robustness_on_whole_frames(fused_run, subset_path, tmp_path):
    """With --frames the benchmark also scores the validation frames; their clean row is the stitched frames'."""
    result = evaluate_run(fused_run, data=subset_path, out=tmp_path / "e", n_boot=20, robustness=True, frames=True,
                          corruptions=["gaussian_noise", "downsample_box"], cross_fit=0)
    table = result["table"]
    frames = table["robustness"]["frames"]
    assert frames["n_tiles"] == table["frames"]["n_frames"]
    stitched = {r["model"]: r["stitched"] for r in table["frames"]["rows"]}
    for model, entry in frames["models"].items():
        assert entry["clean"] == pytest.approx(stitched[model])
        assert len(entry["rows"]) == 6 and all(0 <= r["miou"] <= 1 for r in entry["rows"])
    assert "## Robustness on whole frames" in (tmp_path / "e" / "report.md").read_text()
