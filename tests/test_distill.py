"""Distillation: the student's loss, the teacher's maps moved with the augmentation, training from a teacher."""
import json

import numpy as np
import pytest
import torch
from conftest import load_script

from ensemble.core.augment import AugmentConfig, build_augmentation
from members.batches import SplitArrays, build_loss, make_batch, make_distill_batch
from members.config import TrainConfig
from members.losses import DistillLoss, DistillTarget, MulticlassLoss
from members.training import train_network


def _logits(seed, n=2, h=8, w=16):
    return torch.randn(n, 5, h, w, generator=torch.Generator().manual_seed(seed))


def _loss(alpha=0.5, temperature=2.0, terrain_only=True):
    return DistillLoss(MulticlassLoss("ce", terrain_only=terrain_only), alpha, temperature, terrain_only=terrain_only)


def test_alpha_one_is_the_label_loss_and_a_student_equal_to_its_teacher_pays_nothing_for_it():
    student, teacher = _logits(0), _logits(1)
    labels = torch.randint(1, 5, (2, 8, 16), generator=torch.Generator().manual_seed(2))
    coverage = torch.ones(2, 8, 16)
    labels_only = MulticlassLoss("ce", terrain_only=True)(student, labels)
    assert torch.allclose(_loss(alpha=1.0)(student, DistillTarget(labels, teacher, coverage)), labels_only)
    assert float(_loss(alpha=0.0)(teacher, DistillTarget(labels, teacher, coverage))) == pytest.approx(0.0, abs=1e-6)
    assert float(_loss(alpha=0.0)(student, DistillTarget(labels, teacher, coverage))) > 0.01


def test_the_teacher_term_is_temperature_squared_kl_over_covered_pixels_only():
    student, teacher = _logits(3), _logits(4)
    loss = _loss(alpha=0.0, temperature=3.0, terrain_only=False)
    coverage = torch.zeros(2, 8, 16)
    coverage[:, :, :5] = 1
    s, t = torch.log_softmax(student / 3, 1), torch.log_softmax(teacher / 3, 1)
    expected = 9 * (t.exp() * (t - s)).sum(1)[:, :, :5].mean()
    got = loss(student, DistillTarget(torch.zeros(2, 8, 16, dtype=torch.long), teacher, coverage))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # a student that differs from the teacher only where nothing is covered pays nothing
    changed = teacher.clone()
    changed[:, :, :, 5:] = student[:, :, :, 5:]
    assert float(loss(changed, DistillTarget(torch.zeros(2, 8, 16, dtype=torch.long), teacher, coverage))) < 1e-6


def test_terrain_only_ignores_the_teachers_class_zero():
    student, teacher = _logits(5), _logits(6)
    labels = torch.ones(2, 8, 16, dtype=torch.long)
    masked = teacher.clone()
    masked[:, 0] = -1e4  # the cache's stand-in for the competition objective's -inf
    coverage = torch.ones(2, 8, 16)
    loss = _loss(alpha=0.0)
    assert torch.allclose(loss(student, DistillTarget(labels, teacher, coverage)),
                          loss(student, DistillTarget(labels, masked, coverage)))


def _tiles(n=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 64, 128), dtype=np.float32)
    masks = rng.integers(0, 5, (n, 64, 128)).astype(np.uint8)
    return images, masks


@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(degrade=1.0, brightness=0.2),
                                    AugmentConfig(rotate_degrees=20, zoom_min_scale=0.7)])
def test_teacher_maps_move_with_the_tiles_and_the_draws_do_not_change(config):
    images, masks = _tiles()
    teacher = np.repeat(images[:, None], 5, axis=1).astype(np.float16)  # maps equal to the clean tiles
    augment = build_augmentation(config)
    positions = [3, 0, 5, 1]
    x, y = make_batch(images, masks, positions, augment, torch.Generator().manual_seed(7))
    x2, y2, maps, coverage = make_distill_batch(images, masks, teacher, positions, augment,
                                                generator=torch.Generator().manual_seed(7))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    clean, _ = make_batch(images, masks, positions, build_augmentation(
        AugmentConfig(hflip=config.hflip, rotate_degrees=config.rotate_degrees,
                      zoom_min_scale=config.zoom_min_scale)), torch.Generator().manual_seed(7))
    inside = coverage > 0.999
    assert inside.float().mean() > (0.5 if config.warps else 0.999)
    if config.warps:
        assert (coverage < 0.999).any()
    # the maps hold the clean tile, moved exactly as the tile was (float16 storage aside)
    diff = (maps[:, 2] - clean[:, 0]).abs()[inside]
    assert float(diff.max()) < 2e-3
    if config.degrade or config.brightness:
        assert not torch.allclose(x2, clean)


def _split(n_train=24, n_val=8, seed=0):
    images, masks = _tiles(n_train + n_val, seed)
    return SplitArrays(images[:n_train], masks[:n_train], images[n_train:], masks[n_train:])


def _config(**distill):
    return TrainConfig(name="student", target=None, loss="ce", epochs=1, batch_size=8,
                       model={"width": 4, "out_channels": 5}, distill=distill).check()


def test_a_distilled_network_trains_from_its_teacher_logits_and_needs_them(tmp_path):
    config = _config(teacher="stacked", alpha=0.0)
    split = _split()
    with pytest.raises(ValueError, match="no teacher logits for its 24 training tiles"):
        train_network(config, split, tmp_path / "none", log=None)
    teacher = np.zeros((24, 5, 64, 128), dtype=np.float16)
    teacher[:, 3] = 8.0  # the teacher says sand everywhere
    split.train_teacher_logits = teacher
    assert isinstance(build_loss(config, split.train_masks), DistillLoss)
    metrics = train_network(config, split, tmp_path / "student", log=None)
    assert metrics["finished"] and np.isfinite(metrics["history"][0]["loss"])


@pytest.mark.parametrize("distill, message", [
    ({"alpha": 0.5}, "distill.teacher: .* required"),
    ({"teacher": "stacked", "alpha": 1.5}, "distill.alpha: must be in"),
    ({"teacher": "stacked", "temperature": 0}, "distill.temperature: must be positive"),
    ({"teacher": "stacked", "temp": 2}, "distill.temp: unknown; valid: teacher, alpha, temperature, unlabeled"),
])
def test_distill_settings_are_checked(distill, message):
    with pytest.raises(ValueError, match=message):
        _config(**distill)
    with pytest.raises(ValueError, match="not a one-vs-rest member"):
        TrainConfig(name="sand", target=3, distill={"teacher": "stacked"}).check()


def test_a_network_without_a_teacher_keeps_the_label_loss():
    config = TrainConfig(name="baseline", target=None, loss="ce")
    assert config.distill_settings() == (None, 1.0, 1.0)
    assert isinstance(build_loss(config, _tiles()[1]), MulticlassLoss)


def test_ensemble_distill_trains_the_student_from_the_runs_teacher_and_caches_its_logits(tiny_run, subset_path,
                                                                                           tmp_path):
    from click.testing import CliRunner
    from conftest import copy_run

    from ensemble.cli import main
    from ensemble.core.locations import user_cache_dir
    from ensemble.core.runfolder import RunFolder

    run = copy_run(tiny_run, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = ["distill", "--run", str(run), "--data", str(subset_path), "--preset", "quick", "--epochs", "1",
            "--samples-per-epoch", "48", "--teacher", "baseline", "--alpha", "0.3", "--temperature", "1.5",
            "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    folder = RunFolder(run)
    config = folder.config()["networks"]["student"]
    assert config["distill"] == {"teacher": "baseline", "alpha": 0.3, "temperature": 1.5, "unlabeled": None}
    assert config["model"]["width"] == folder.config()["networks"]["baseline"]["model"]["width"]
    assert (folder.network_dir("student") / "best.pt").exists()
    changed = [p for p, content in before.items() if p.read_bytes() != content and p.name not in
               ("manifest.json", "config.json", "progress.png")]  # the run's records, and its figure redrawn
    assert not changed  # the other networks' files stay byte for byte
    cached = list((user_cache_dir() / "teacher").glob(f"{run.name}-baseline-*.npy"))
    assert len(cached) == 1
    logits = np.load(cached[0], mmap_mode="r")
    assert logits.dtype == np.float16 and logits.shape[1:] == (5, 64, 128) and np.isfinite(logits).all()
    # served like any network of the run: plain, and with tuned class offsets
    result = CliRunner().invoke(main, ["fuse", "--run", str(run), "--data", str(subset_path), "--strategy",
                                       "student_bias", "--quiet"])
    assert result.exit_code == 0, result.output
    from ensemble import api

    images = np.load(subset_path)["test_set"][:4]
    for strategy in ("student", "student_bias"):
        masks = api.predictor(str(run), strategy=strategy).predict(images)
        assert masks.shape == (4, 64, 128) and masks.dtype == np.uint8
    # exported as one network: the predictor's probabilities, in a program of the baseline's size
    import onnxruntime

    from ensemble.inference.export import load_exported

    x = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    sizes = {}
    for strategy in ("student", "student_bias", "baseline"):
        expected = api.predictor(str(run), strategy=strategy, engine="torch", tta="none").predict_proba(images)
        pt2 = api.export(run=str(run), strategy=strategy, out=str(tmp_path / f"{strategy}.pt2"), tta="none")["out"]
        with torch.no_grad():
            assert np.allclose(load_exported(pt2)(x).numpy(), expected, atol=1e-4)
        onnx = api.export(run=str(run), strategy=strategy, out=str(tmp_path / f"{strategy}.onnx"), tta="none")["out"]
        got = onnxruntime.InferenceSession(onnx).run(None, {"images": x.numpy()})[0]
        assert np.allclose(got, expected, atol=1e-4)
        sizes[strategy] = (tmp_path / f"{strategy}.onnx").stat().st_size
    assert abs(sizes["student"] - sizes["baseline"]) < 0.02 * sizes["baseline"]


def test_an_unknown_teacher_is_a_one_line_error(tiny_run, subset_path, tmp_path):
    from click.testing import CliRunner
    from conftest import assert_one_line_error, copy_run

    from ensemble.cli import main

    run = copy_run(tiny_run, tmp_path)
    result = CliRunner().invoke(main, ["distill", "--run", str(run), "--data", str(subset_path), "--preset", "quick",
                                       "--epochs", "1", "--samples-per-epoch", "48", "--teacher", "nosuch", "--quiet"])
    assert_one_line_error(result, "--teacher nosuch")
    assert "student" not in json.loads((run / "config.json").read_text())["networks"]  # refused before any write


def test_evaluate_scores_the_student_and_its_tuned_offsets_and_counts_the_teachers_minutes(tiny_run, subset_path,
                                                                                             tmp_path):
    from conftest import TINY, copy_run

    from ensemble import api
    from ensemble.core.runfolder import RunFolder
    from ensemble.evaluation.comparisons import model_networks

    run = copy_run(tiny_run, tmp_path)
    api.fuse(run=str(run), strategy="learned", data=str(subset_path), quiet=True)
    api.distill(data=str(subset_path), run=str(run), teacher="learned", **{**TINY, "width": None})
    result = api.evaluate(run=str(run), data=str(subset_path), cross_fit=2, quiet=True, robustness=True,
                          corruptions=("jpeg",), n_boot=20)
    models = result["table"]["models"]
    assert "student" in models and "student_bias" in models
    # the robustness benchmark scores the student and its teacher too, the served default still last (the one it
    # details)
    robust = result["table"]["robustness"]["models"]
    assert list(robust)[-1] == result["table"]["best_strategy"]
    assert {"baseline", "baseline_bias", "student", "student_bias", "learned"} <= set(robust)
    student = robust["student"]
    assert student["clean"] == pytest.approx(models["student"]["miou"][result["table"]["headline"]])
    assert [(r["corruption"], r["severity"]) for r in student["rows"]] == [("jpeg", 1), ("jpeg", 2), ("jpeg", 3)]
    # the student's question: labels vs teacher at one network's cost, and what it keeps of the teacher
    question = next(b for b in result["table"]["budgets"] if b["budget"].startswith("one network"))
    assert [(d["model"], d["minus"]) for d in question["differences"]] == [
        ("student", "baseline"), ("student_bias", "baseline_bias"), ("student", "learned"), ("student_bias", "learned")]
    rows = {r["model"]: r for r in question["rows"]}
    assert rows["student"]["networks"] == 6 and rows["learned"]["networks"] == 5
    assert rows["student"]["minutes"] > rows["learned"]["minutes"]  # the teacher's minutes and the student's own
    assert "one network at predict time" in (run / "evaluation" / "report.md").read_text()
    folder = RunFolder(run)
    assert model_networks(folder, "student") == ["background", "soil", "bedrock", "sand", "big_rock", "student"]
    assert model_networks(folder, "student_bias") == model_networks(folder, "student")


@pytest.mark.slow  # trains, fuses, distils and evaluates a whole run
def test_ensemble_run_distill_adds_the_student_and_reads_the_data_once(subset_path, tmp_path, monkeypatch):
    """`ensemble run --distill` trains, fuses, distils the served default and evaluates the student; the whole job
    reads and hashes its npz once in this process (networks trained here and workers get the arrays or the path
    and the hash)."""
    from click.testing import CliRunner

    from ensemble.cli import main
    from ensemble.core import data
    from ensemble.core.runfolder import RunFolder

    reads = []
    read = data._read_data
    monkeypatch.setattr(data, "_read_data", lambda *args: reads.append(args[0]) or read(*args))
    data._LOADED.clear()
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--run", str(run), "--data", str(subset_path), "--preset", "quick",
                                       "--epochs", "1", "--samples-per-epoch", "48", "--width", "4", "--distill",
                                       "--jobs", "1", "--cross-fit", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert reads == [subset_path]
    folder = RunFolder(run)
    student = folder.config()["networks"]["student"]
    assert student["distill"]["teacher"] in folder.fuser_names() or student["distill"]["teacher"] == "baseline"
    assert (folder.fusion_dir / "student_bias.pt").exists()
    report = json.loads((folder.evaluation_dir / "report.json").read_text())
    assert "student" in report["table"]["models"]


def test_unlabeled_images_are_cut_into_tiles_at_the_training_scale():
    from ensemble.distill import cut_tiles

    image = np.arange(200 * 300, dtype=np.float32).reshape(200, 300) / (200 * 300)
    tiles = cut_tiles(image, (64, 128), scale=1.0)
    assert tiles.shape == (3 * 2, 64, 128)  # 200 // 64 rows, 300 // 128 columns; the edges left out
    assert np.array_equal(tiles[1], image[:64, 128:256])
    halved = cut_tiles(image, (64, 128), scale=2.0)  # 100 x 150 at the training scale
    assert halved.shape == (1, 64, 128)
    assert np.allclose(halved[0], image[:128, :256].reshape(64, 2, 128, 2).mean(axis=(1, 3)), atol=1e-5)
    from ensemble.core.errors import DataError

    with pytest.raises(DataError, match="smaller than one 64x128 tile"):
        cut_tiles(image[:50], (64, 128))


def test_unlabeled_sources_need_the_npz_key_named(subset_path, tmp_path):
    from ensemble.core.errors import DataError
    from ensemble.distill import unlabeled_sources

    with pytest.raises(DataError, match="name the array, PATH.npz:KEY"):
        unlabeled_sources(str(subset_path))
    with pytest.raises(DataError, match="has no key 'nosuch'"):
        unlabeled_sources(f"{subset_path}:nosuch")
    named = unlabeled_sources(f"{subset_path}:test_set")
    assert len(named) == len(np.load(subset_path)["test_set"]) and named[0][1].shape == (64, 128)
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((128, 256)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png\n")
    listed = unlabeled_sources(str(tmp_path / "list.txt"))
    assert len(listed) == 1 and listed[0][1].shape == (128, 256) and listed[0][1].max() <= 1.0


def test_a_student_learns_from_unlabeled_tiles_through_the_teacher(tiny_run, subset_path, tmp_path):
    from conftest import TINY, copy_run

    from ensemble import api
    from ensemble.core.runfolder import RunFolder

    run = copy_run(tiny_run, tmp_path)
    metrics = api.distill(data=str(subset_path), run=str(run), teacher="baseline", unlabeled=f"{subset_path}:test_set",
                          **{**TINY, "width": None, "samples_per_epoch": 0, "epochs": 1})
    assert metrics["finished"]
    recorded = RunFolder(run).config()["networks"]["student"]["distill"]["unlabeled"]
    n_test = len(np.load(subset_path)["test_set"])
    assert recorded["source"].endswith(":test_set") and recorded["tiles"] == n_test and len(recorded["sha256"]) == 64


def test_the_vote_teacher_averages_members_and_baseline_and_fits_nothing():
    from fusion import new_fuser

    members, baseline = _logits(10, n=3, h=16, w=32), _logits(11, n=3, h=16, w=32)
    masks = torch.randint(0, 5, (3, 16, 32), generator=torch.Generator().manual_seed(12))
    inputs = torch.cat([members, baseline], 1)
    fuser = new_fuser("vote", "fullmask", 0).fit(inputs, masks)
    expected = torch.log(0.5 * torch.softmax(members, 1) + 0.5 * torch.softmax(baseline, 1))
    assert torch.allclose(torch.as_tensor(fuser.predict_logits(inputs)), expected, atol=1e-5)
    other = new_fuser("vote", "fullmask", 0).fit(inputs, torch.randint(0, 5, (3, 16, 32)))
    # the labels change nothing
    assert torch.allclose(torch.as_tensor(other.predict_logits(inputs)), expected, atol=1e-5)


def test_the_teacher_cache_key_follows_what_the_teacher_computes_and_nothing_else(tiny_run, tmp_path):
    from conftest import copy_run

    from ensemble.core.runfolder import RunFolder
    from ensemble.distill import teacher_key
    from fusion import new_fuser

    folder = RunFolder(copy_run(tiny_run, tmp_path))
    folder.fusion_dir.mkdir(exist_ok=True)
    inputs, masks = torch.cat([_logits(1), _logits(2)], 1), torch.zeros(2, 8, 16, dtype=torch.long)

    def save(strategy, inputs, **fit_info):
        fuser = new_fuser(strategy, "fullmask", 0).fit(inputs, masks)
        fuser.fit_info_.update(fit_info)
        fuser.save(folder.fuser_path(strategy))

    def key(strategy="vote"):
        return teacher_key(folder, strategy, "data", [0, 1, 2])

    save("vote", inputs, fit_seconds=0.1)
    first = key()
    save("vote", inputs, fit_seconds=9.9)  # refitted: other file bytes, the same fuser
    assert key() == first
    save("argmax", inputs[:, :5])  # a fuser the teacher does not read
    folder.network_dir("student").mkdir(parents=True)
    (folder.network_dir("student") / "best.pt").write_bytes(b"the student, being trained")
    folder.record_checksums([folder.best_path("student")])
    assert key() == first
    baseline = key("baseline")
    folder.best_path("soil").write_bytes(b"another soil member")  # a network the vote reads, the baseline does not
    folder.record_checksums([folder.best_path("soil")])
    assert key() != first and key("baseline") == baseline
    assert teacher_key(folder, "vote", "other data", [0, 1, 2]) != key() != teacher_key(folder, "vote", "data", [0, 1])


def test_the_teacher_check_resamples_every_corrupted_set_with_the_same_tiles_and_copies_a_run_without_changing_it(
        tiny_run, tmp_path):
    from ensemble.core.metrics import mean_iou, per_tile_confusion

    check = load_script("teacher_check")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (6, 8, 8))
    sets = [per_tile_confusion(truth, np.where(rng.random(truth.shape) < p, rng.integers(1, 5, truth.shape), truth))
            for p in (0.1, 0.5, 0.9)]
    blocks = check.block_diagonal(sets)
    assert blocks.shape == (6, 15, 15) and blocks.sum() == sum(s.sum() for s in sets)
    expected = np.mean([mean_iou(s.sum(0), "competition") for s in sets])
    assert check.mean_block_miou(blocks.sum(0), "competition") == pytest.approx(expected)
    # the copy: networks and fusers there, training leftovers not; the original's files untouched
    before = {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()}
    copy = check.teacher_copy(tiny_run, tmp_path / "copy")
    assert (copy / "baseline" / "best.pt").exists() and (copy / "manifest.json").exists()
    assert not list(copy.rglob("latest.pt")) and not (copy / "logs").exists()
    assert (copy / "baseline" / "best.pt").stat().st_ino == (tiny_run / "baseline" / "best.pt").stat().st_ino
    (copy / "config.json").write_text("{}")  # a copied record is the copy's own
    assert {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()} == before


def test_predict_times_runs_each_strategy_in_interleaved_rounds(tiny_run, subset_path, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "predict_times.py"
    out = tmp_path / "times.json"
    proc = subprocess.run([sys.executable, str(script), "--run", str(tiny_run), "--data", str(subset_path),
                           "--rounds", "2", "--out", str(out), "baseline", "baseline"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["strategies"]["baseline"]
    assert len(result["seconds"]) == 4 and all(s > 0 for s in result["seconds"]) and result["ratio"] == 1.0
    assert proc.stdout.count("round ") == 2
    proc = subprocess.run([sys.executable, str(script), "--run", str(tiny_run), "--data", str(subset_path),
                           "nosuch"], capture_output=True, text=True)
    assert proc.returncode != 0 and "predict --strategy nosuch" in proc.stderr
