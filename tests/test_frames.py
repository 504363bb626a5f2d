"""Images of any size: sliding windows, scale, per-image outputs, input formats, errors and flat memory."""
import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_one_line_error, fused_copy, predict_peak_mb
from PIL import Image

from ensemble.cli import main
from ensemble.core.errors import DataError, EnsembleError
from ensemble.inference import Predictor
from ensemble.inference.images import load_images
from ensemble.inference.windows import check_scale, check_step, resize_logits, stitched_logits, window_starts

H, W = 64, 128


@pytest.fixture(scope="module")
def frames_run(tiny_run, subset_path, tmp_path_factory):
    """A copy of the session's tiny run with argmax and learned fusers."""
    return fused_copy(tiny_run, subset_path, tmp_path_factory.mktemp("frames"), learned_epochs=2)


@pytest.fixture(scope="module")
def tiles(subset_path):
    return np.load(subset_path)["test_set"][:8]  # uint8 (8, 64, 128)


def _per_pixel_net(channels=5):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 1), torch.nn.Tanh(), torch.nn.Conv2d(8, channels, 1)).eval()


def _nearest_level_net(levels):
    """A 1x1 convolution whose argmax is the index of the grey level nearest each pixel (logit 2cx - c^2)."""
    net = torch.nn.Conv2d(1, len(levels), 1).eval()
    with torch.no_grad():
        net.weight.copy_(torch.tensor(2 * np.asarray(levels), dtype=torch.float32).view(-1, 1, 1, 1))
        net.bias.copy_(torch.tensor(-np.asarray(levels) ** 2, dtype=torch.float32))
    return net


def test_window_grid_spreads_evenly_and_ends_at_the_border():
    assert window_starts(64, 64) == [0] and window_starts(30, 64) == [0]
    assert window_starts(128, 64, 1.0) == [0, 64] and window_starts(128, 64, 0.5) == [0, 32, 64]
    starts = window_starts(200, 64, 0.5)
    assert starts[0] == 0 and starts[-1] == 200 - 64 and max(np.diff(starts)) <= 32
    assert max(np.diff(starts)) - min(np.diff(starts)) <= 1  # evenly spread, not a clamped last window


@pytest.mark.parametrize("shape", [(64, 128), (63, 127), (5, 7), (1, 1), (130, 257), (200, 301), (64, 300)])
def test_per_pixel_network_is_seamless(shape):
    """A 1x1-convolution network sees only its pixel: windows, padding and weights must not change its output."""
    net = _per_pixel_net()
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stitched, _ = stitched_logits(net, image, (H, W), 0.5, batch_size=3)
        whole = net(image[None, None])[0]
    assert stitched.shape == whole.shape
    torch.testing.assert_close(stitched, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_per_pixel_network_through_the_predictor(frames_run, tta):
    """Member logits are stitched before the fuser reads them, with flip TTA composed per window."""
    predictor = Predictor(frames_run, "learned", tta=tta, step=0.4)
    net = _per_pixel_net()
    predictor._forward = net
    image = np.random.default_rng(2).random((150, 333), dtype=np.float32)
    class_logits, member_logits = predictor.image_logits(image)
    with torch.no_grad():
        whole_members = net(torch.from_numpy(image)[None, None])
        whole = predictor.fuser.predict_logits(whole_members)
    torch.testing.assert_close(member_logits, whole_members, atol=1e-5, rtol=1e-5)
    finite = torch.isfinite(whole)
    assert torch.equal(finite, torch.isfinite(class_logits))
    torch.testing.assert_close(class_logits[finite], whole[finite], atol=1e-4, rtol=1e-4)


def test_one_tile_and_two_tiles_bit_for_bit(frames_run, tiles):
    """What the window path gives equals today's batched prediction of the same input, bit for bit.

    (The engines' convolutions may round differently for another batch size, so the comparison is
    with the same input: one tile alone, or the frame's two tiles as one batch of windows.)
    """
    predictor = Predictor(frames_run, "learned")
    for i in range(3):  # one 64x128 image through the window path: exactly the batched logits
        assert predictor.fits_tiles(tiles[i].shape)
        assert np.array_equal(predictor.predict_logits(tiles[i]), predictor.predict_logits(tiles[i : i + 1])[0])
        assert np.array_equal(predictor.predict([tiles[i]])[0], predictor.predict(tiles[i : i + 1])[0])
    frame = np.concatenate([tiles[0], tiles[1]], axis=0)  # 128x128: top and bottom tile
    stepped = Predictor(frames_run, "learned", step=1.0)
    members = predictor.predict_member_logits(tiles[:2])  # the stitched logits the fuser reads: exact
    assert np.array_equal(stepped.predict_member_logits(frame), np.concatenate([members[0], members[1]], axis=1))
    batched = predictor.predict_logits(tiles[:2])  # the fuser's own convolution may round by its input's shape
    np.testing.assert_allclose(stepped.predict_logits(frame), np.concatenate([batched[0], batched[1]], axis=1),
                               rtol=1e-6, atol=1e-6)
    masks = predictor.predict(tiles[:2])
    assert np.array_equal(stepped.predict(frame), np.concatenate([masks[0], masks[1]], axis=0))


def test_api_forms_and_sizes(frames_run, tiles):
    predictor = Predictor(frames_run, "learned")
    frame = np.concatenate([tiles[2], tiles[3]], axis=0)
    odd = tiles[4][:37, :99]
    masks = predictor.predict([frame, odd, tiles[5]])
    assert [m.shape for m in masks] == [(128, 128), (37, 99), (64, 128)]
    assert all(m.dtype == np.uint8 and (m > 0).all() for m in masks)  # competition: class 0 never predicted
    assert predictor.predict(odd).shape == (37, 99)
    probs = predictor.predict_proba([frame, odd])
    assert probs[0].shape == (5, 128, 128) and np.allclose(probs[1].sum(axis=0), 1, atol=1e-5)
    assert np.array_equal(probs[0].argmax(axis=0), masks[0])
    assert predictor.predict(tiles[:, :32]).shape == (8, 32, 128)
    assert predictor.predict(frame.astype(np.float32) / 255).shape == (128, 128)
    with pytest.raises(DataError, match=r"images\[1\].*expected a grayscale image"):
        predictor.predict([frame, np.zeros((0, 4))])


def test_scale_2_agrees_with_scale_1(frames_run, tiles):
    """A frame upsampled 2x and predicted at --scale 2 agrees with the frame at scale 1.

    Nearest-neighbour upsampling is what area averaging undoes exactly, so the networks see the same
    frame: the scale-2 logits are the scale-1 logits upsampled bilinearly, which a per-pixel network
    (every pixel a boundary) shows to float rounding. The run's networks agree on nearly all pixels;
    a smoothing upsampler (bilinear) changes the texture they read (docs/results.md, Whole frames).
    """
    frames = [np.concatenate([tiles[i], tiles[i + 1]], axis=0) for i in (0, 2, 4, 6)]
    nearest = [np.asarray(Image.fromarray(f).resize((256, 256), Image.NEAREST)) for f in frames]
    probe_1, probe_2 = Predictor(frames_run, "baseline"), Predictor(frames_run, "baseline", scale=2)
    levels = np.quantile(np.stack(frames) / 255.0, [0.1, 0.3, 0.5, 0.7, 0.9])
    probe_1._forward = probe_2._forward = _nearest_level_net(levels)  # logits that follow the image
    logits_1, logits_2 = probe_1.predict_logits(frames[0]), probe_2.predict_logits(nearest[0])
    assert len(np.unique(logits_1.argmax(axis=0))) == 5 and logits_2.shape == (5, 256, 256)
    expected = resize_logits(torch.from_numpy(logits_1)[None], (256, 256))[0].numpy()
    np.testing.assert_allclose(logits_2, expected, atol=1e-5)
    at_1 = Predictor(frames_run, "learned").predict(frames)
    at_2 = Predictor(frames_run, "learned", scale=2)
    for name, method, least in (("nearest", Image.NEAREST, 0.98), ("bilinear", Image.BILINEAR, 0.5)):
        masks = at_2.predict([np.asarray(Image.fromarray(f).resize((256, 256), method)) for f in frames])
        agree = float(np.mean([(np.kron(a, np.ones((2, 2), dtype=np.uint8)) == b) for a, b in zip(at_1, masks)]))
        print(f"scale 2 vs scale 1 ({name} upsampling): {100 * agree:.2f} % of pixels agree")
        assert agree >= least


def test_scale_and_step_are_checked():
    assert check_scale("2") == 2.0 and check_step(1) == 1.0
    for bad in (0, -1, "x", float("nan"), float("inf")):
        with pytest.raises(EnsembleError, match="--scale: must be a number > 0"):
            check_scale(bad)
    for bad in (0, 1.5, -0.2, "x"):
        with pytest.raises(EnsembleError, match=r"--step: must lie in \(0, 1\]"):
            check_step(bad)


def _image_folder(folder, tiles):
    """A folder of images in every format and size ``--images`` reads."""
    folder.mkdir()
    gray = tiles[0]
    Image.fromarray(gray).save(folder / "tile.png")
    Image.fromarray(np.dstack([tiles[1][:50, :90]] * 3)).save(folder / "colour.jpg", quality=95)
    Image.fromarray(tiles[2][:30, :40].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(tiles[3][:20, :70]).convert("P").save(folder / "palette.png")
    Image.fromarray(tiles[4][:60, :20]).convert("LA").save(folder / "alpha.png")
    Image.fromarray(np.concatenate([tiles[5], tiles[6]])).save(folder / "frame.tif")
    return {"tile": (64, 128), "colour": (50, 90), "sixteen": (30, 40), "palette": (20, 70), "alpha": (60, 20),
            "frame": (128, 128)}


def test_cli_writes_every_image_output(frames_run, tiles, tmp_path, monkeypatch):
    sizes = _image_folder(tmp_path / "images", tiles)
    loaded, ids = load_images(tmp_path / "images")
    assert isinstance(loaded, list) and {i: im.shape for i, im in zip(ids, loaded)} == sizes
    assert np.array_equal(np.round(loaded[ids.index("sixteen")] * 255), tiles[2][:30, :40])
    monkeypatch.chdir(tmp_path)
    out = {k: tmp_path / k for k in ("masks", "png", "overlay", "uncertainty")}
    result = CliRunner().invoke(main, ["predict", "--run", str(frames_run), "--strategy", "learned", "--images",
                                       str(tmp_path / "images"), "--masks", str(out["masks"]), "--png",
                                       str(out["png"]), "--overlay", str(out["overlay"]), "--uncertainty",
                                       str(out["uncertainty"]), "--summary", "shares.json", "--step", "0.5"])
    assert result.exit_code == 0, result.output
    assert "6/6 images" in result.stderr and "tiles/s" in result.stderr
    assert not (tmp_path / "submission.csv").exists()  # only image outputs asked for: no CSV
    shares = {row["id"]: row for row in json.loads((tmp_path / "shares.json").read_text())}
    for stem, (height, width) in sizes.items():
        with Image.open(out["masks"] / f"{stem}.png") as mask:
            assert mask.mode == "L" and mask.size == (width, height)
            values = np.asarray(mask)
        assert values.max() <= 4
        with Image.open(out["png"] / f"{stem}.png") as png:
            assert png.size == (width, height) and png.mode == "RGB"
        with Image.open(out["overlay"] / f"{stem}.png") as overlay:
            assert overlay.size[1] > height and overlay.size[0] >= width  # the legend below
        with Image.open(out["uncertainty"] / f"{stem}_entropy.png") as entropy:
            assert entropy.size == (width, height)
        assert (out["uncertainty"] / f"{stem}_disagreement.png").exists()
        row = shares[stem]
        assert (row["height"], row["width"]) == (height, width)
        assert row["soil"] == pytest.approx(float((values == 1).mean()))
        assert sum(row[c] for c in ("background", "soil", "bedrock", "sand", "big_rock")) == pytest.approx(1)
    csv_run = CliRunner().invoke(main, ["predict", "--run", str(frames_run), "--strategy", "learned", "--images",
                                        str(tmp_path / "images" / "tile.png"), "--masks", "m2", "--out", "one.csv",
                                        "--summary", "s.csv", "--quiet"])
    assert csv_run.exit_code == 0 and csv_run.stderr == "", csv_run.output
    assert (tmp_path / "one.csv").read_text().startswith("id,0,1") and (tmp_path / "s.csv").exists()


def test_cli_refusals_are_one_line(frames_run, tiles, tmp_path, monkeypatch):
    _image_folder(tmp_path / "images", tiles)
    monkeypatch.chdir(tmp_path)
    base = ["predict", "--run", str(frames_run), "--strategy", "learned", "--images"]
    csv = CliRunner().invoke(main, [*base, "images", "--out", "s.csv"])
    assert_one_line_error(csv, "--out: a Kaggle CSV holds 64x128 tiles", "alpha.png is 60x20")
    (tmp_path / "bad").mkdir()
    Image.fromarray(tiles[0]).save(tmp_path / "bad" / "a.png")
    data = (tmp_path / "bad" / "a.png").read_bytes()
    (tmp_path / "bad" / "b.png").write_bytes(data[: len(data) // 2])  # truncated
    truncated = CliRunner().invoke(main, [*base, "bad", "--masks", "m"])
    assert_one_line_error(truncated, "b.png: not a decodable PNG", "expected a PNG, JPEG or TIFF image")
    (tmp_path / "bad" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    assert_one_line_error(CliRunner().invoke(main, [*base, "bad", "--masks", "m"]), "b.png: not a decodable PNG")
    for option, value, fragment in (("--scale", "0", "--scale: must be a number > 0"),
                                    ("--step", "1.5", "--step: must lie in (0, 1]"),
                                    ("--max-pixels", "1000", "64x128 = 8192 pixels, over the limit of 1000")):
        result = CliRunner().invoke(main, [*base, "images/tile.png", "--masks", "m", option, value])
        assert_one_line_error(result, fragment)
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, [*base, "images/tile.png", "--overlay", "afile"])
    assert_one_line_error(result, "--overlay afile: is a file; expected a folder")
    zero = tmp_path / "zero.npz"
    np.savez(zero, a=np.zeros((3, 4), dtype=np.uint8), b=np.zeros((0, 4), dtype=np.uint8))
    assert_one_line_error(CliRunner().invoke(main, [*base, str(zero), "--masks", "m"]), "zero.npz['b']",
                          "expected a grayscale image (H, W) with pixels")
    assert not any((tmp_path / name).exists() for name in ("m", "s.csv", "submission.csv"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_is_flat_in_the_number_of_images(frames_run, tiles, tmp_path):
    """The peak at 50 large images exceeds the peak at 1 by less than one image's worth: its float image
    plus its class logits at the input size (more than predicting it holds)."""
    side = 512
    rng = np.random.default_rng(0)
    folders = {}
    for n in (1, 50):
        folder = folders[n] = tmp_path / f"n{n}"
        folder.mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(folder / f"{i:03d}.png",
                                                                                      compress_level=0)
    peaks = {}
    for n, folder in folders.items():
        out = tmp_path / f"out{n}"
        peaks[n] = predict_peak_mb(frames_run, folders[1], folder, options={"scale": 4},
                                   outputs={"masks_dir": out, "overlay_dir": f"{out}_o"})
        assert peaks[n]["images"] == n and len(list((tmp_path / f"out{n}").iterdir())) == n
    one_image_mb = side * side * (4 + 5 * 4) / 2**20
    growth = peaks[50]["peak_mb"] - peaks[1]["peak_mb"]
    print(f"peak above start: 1 image {peaks[1]['peak_mb']:.1f} MB, 50 images {peaks[50]['peak_mb']:.1f} MB "
          f"(+{growth:.1f} MB; one image's worth {one_image_mb:.1f} MB)")
    assert growth < one_image_mb, peaks


def test_evaluate_frames_beside_tiles(frames_run, subset_path, tmp_path):
    """With step 1.0 a frame's windows are its two tiles: the stitched baseline scores exactly as tile by tile."""
    from ensemble.evaluation.evaluate import evaluate_run
    from ensemble.evaluation.frames import frame_pairs

    assert frame_pairs(np.array(["a:top", "b:top", "a:bottom", "c:bottom"])).tolist() == [[0, 2]]
    result = evaluate_run(frames_run, data=subset_path, out=tmp_path / "ev", n_boot=20, cross_fit=2, frames=True,
                          step=1.0)
    frames = result["table"]["frames"]
    rows = {r["model"]: r for r in frames["rows"]}
    assert set(rows) == {"baseline", "baseline_bias", "argmax", "learned"} and frames["n_frames"] > 10
    assert frames["shape"] == [128, 128] and rows["baseline"]["diff"] == 0 and rows["baseline"]["tiles"] > 0
    assert all(abs(r["diff"]) < 1e-3 for r in rows.values())
    assert "## Whole frames" in (tmp_path / "ev" / "report.md").read_text()
    with pytest.raises(EnsembleError, match=r"--step: must lie in \(0, 1\]"):
        evaluate_run(frames_run, data=subset_path, out=tmp_path / "ev2", frames=True, step=0)


def test_score_folders_of_any_size(tmp_path, subset_path):
    from ensemble.evaluation.score import score_files, score_masks

    rng = np.random.default_rng(3)
    truth = {"a": rng.integers(0, 5, (30, 50)), "b": rng.integers(0, 5, (128, 128)), "c": rng.integers(0, 5, (7, 3))}
    pred = {k: np.where(rng.random(v.shape) < 0.8, v, rng.integers(0, 5, v.shape)) for k, v in truth.items()}
    for folder, masks in (("pred", pred), ("truth", truth)):
        (tmp_path / folder).mkdir()
        for stem, mask in masks.items():
            Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp_path / folder / f"{stem}.png")
    np.savez(tmp_path / "truth.npz", **truth)
    by_folder = score_files(tmp_path / "pred", tmp_path / "truth")
    by_npz = score_files(tmp_path / "pred", tmp_path / "truth.npz")
    flat = lambda d: np.concatenate([d[k].ravel() for k in sorted(d)])[None, None]  # noqa: E731
    expected = score_masks(flat(pred), flat(truth))
    for scores in (by_folder, by_npz):
        assert scores["competition"] == pytest.approx(expected["competition"], nan_ok=True) and scores["tiles"] == 3
    result = CliRunner().invoke(main, ["score", str(tmp_path / "pred"), "--masks", str(tmp_path / "truth"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["competition"]["mean"] == pytest.approx(
        expected["competition"]["mean"])
    (tmp_path / "truth" / "c.png").unlink()
    assert_one_line_error(CliRunner().invoke(main, ["score", str(tmp_path / "pred"), "--masks",
                                                    str(tmp_path / "truth")]), "have no true mask", "'c'")
    Image.fromarray(truth["c"][:5].astype(np.uint8), mode="L").save(tmp_path / "truth" / "c.png")
    assert_one_line_error(CliRunner().invoke(main, ["score", str(tmp_path / "pred"), "--masks",
                                                    str(tmp_path / "truth")]), "c is 7x3, but its true mask")
    Image.fromarray(np.zeros((7, 3, 3), dtype=np.uint8)).save(tmp_path / "pred" / "c.png")
    assert_one_line_error(CliRunner().invoke(main, ["score", str(tmp_path / "pred"), "--masks",
                                                    str(tmp_path / "truth")]), "c.png: a RGB image")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_one_huge_image_holds_its_logits_at_the_training_scale_only(frames_run, tmp_path):
    """A 2048x2048 image at --scale 8 into class-id masks: the peak is the image and its masks, far less than
    its class logits would take at the input size (the resize back is done band by band)."""
    side = 2048
    folder = tmp_path / "huge"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(folder / "frame.png", compress_level=0)
    warm = tmp_path / "warm"
    warm.mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 128), dtype=np.uint8)).save(warm / "w.png")
    peak_mb = predict_peak_mb(frames_run, warm, folder, options={"scale": 8},
                              outputs={"masks_dir": tmp_path / "out"})["peak_mb"]
    image_mb, logits_at_input_mb = side * side * 4 / 2**20, side * side * 5 * 4 / 2**20
    print(f"peak above start for one {side}x{side} image: {peak_mb:.1f} MB (float image {image_mb:.0f} MB, "
          f"class logits at its size would be {logits_at_input_mb:.0f} MB)")
    assert peak_mb < logits_at_input_mb
    with Image.open(tmp_path / "out" / "frame.png") as mask:
        assert mask.size == (side, side)
