"""Members and baseline: the U-Net, losses, checkpoints, parallel training, resume."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY  # noqa: E402

import members.training as training
from ensemble import api
from ensemble.core.data import load_data
from ensemble.core.errors import RunError
from members.batches import SplitArrays, build_loss, make_batch, targets_and_valid
from members.blocks import get_block
from members.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from members.config import TrainConfig
from members.training import NetworkTrainer, train_network
from members.unet import (
    UNet,
    UNetConfig,
    count_parameters,
    matched_baseline_width,
    members_parameter_count,
    model_config,
)
from members.validation import validation_score


@pytest.mark.parametrize("size", [(64, 128), (128, 256)])
def test_unet_emits_logits_of_input_size(size):
    for k in (1, 5):
        out = UNet(width=4, out_channels=k)(torch.rand(2, 1, *size))
        assert out.shape == (2, k, *size)


def test_unet_wrong_size_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 8"):
        UNet(width=4)(torch.rand(1, 1, 60, 128))


def test_registry_lists_valid_names():
    with pytest.raises(ValueError, match="valid: bilinear, transpose"):
        get_block("upsample", "pixelshuffle")
    UNet(width=4, bottleneck="double_conv", upsample="bilinear", dropout=0.1)(torch.rand(1, 1, 64, 128))


def _real_batch(mars, n=16):
    idx = np.flatnonzero((mars.masks == 4).any(axis=(1, 2)))[:n]
    return make_batch(mars.images, mars.masks, idx, None)


@pytest.mark.parametrize("target", [4, None])
def test_loss_decreases_on_real_tiles(mars, target):
    torch.manual_seed(0)
    name = "big_rock" if target == 4 else "baseline"
    config = TrainConfig(name=name, target=target, loss="bce_dice" if target else "ce")
    model = UNet(width=4, out_channels=1 if target else 5)
    loss_fn = build_loss(config, mars.masks[:500])
    x, y = _real_batch(mars)
    goal, valid = targets_and_valid(config, y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(x), goal, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("out_channels", [1, 5])
def test_channels_last_steps_match_nchw(out_channels):
    """A few AdamW steps of a tiny U-Net give the same losses in channels-last as in NCHW, within float rounding."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 64, 128, generator=gen)
    y = torch.randint(0, 5, (8, 64, 128), generator=gen)
    target = None if out_channels == 5 else 2
    config = TrainConfig(name="net", target=target, loss="ce" if target is None else "bce_dice")
    loss_fn = build_loss(config, y.numpy().astype(np.uint8))
    goal, valid = targets_and_valid(config, y)
    losses = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = UNet(width=4, out_channels=out_channels).to(memory_format=layout).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses[layout] = []
        for _ in range(6):
            loss = loss_fn(model(x.contiguous(memory_format=layout)), goal, valid)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[layout].append(float(loss.detach()))
    assert model.down[1][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert losses[torch.channels_last][-1] < losses[torch.channels_last][0]
    np.testing.assert_allclose(losses[torch.channels_last], losses[torch.contiguous_format], rtol=1e-4)


def test_trainer_trains_channels_last_and_saves_contiguous(tmp_path, subset_path, monkeypatch):
    """The baseline's trainer: NCHW and channels-last epochs agree; files are contiguous; resume restores the layout."""
    data = load_data(subset_path)
    train_idx, val_idx = np.arange(len(data.images) - 32), np.arange(len(data.images) - 32, len(data.images))
    config = TrainConfig(name="baseline", model=model_config(4, 3, 5), loss="ce", epochs=1, batch_size=16,
                         samples_per_epoch=48)
    history = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        monkeypatch.setattr(training, "MEMORY_FORMAT", layout)
        out = tmp_path / str(layout)
        split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)
        history[layout] = train_network(config, split, out, log=None)["history"][0]
    nchw, last = history[torch.contiguous_format], history[torch.channels_last]
    assert last["loss"] == pytest.approx(nchw["loss"], rel=1e-4)
    assert last["val_iou"] == pytest.approx(nchw["val_iou"], abs=1e-3)
    ckpt = load_checkpoint(out / "latest.pt")
    moments = [v for s in ckpt["optimizer"]["state"].values() for v in s.values() if v.ndim == 4]
    assert moments and all(t.is_contiguous() for t in [*ckpt["model"].values(), *moments])
    resumed = NetworkTrainer(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), out)
    weight = resumed.model.down[1][0][0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert resumed.optimizer.state[weight]["exp_avg"].stride() == weight.stride()


def test_checkpoint_roundtrip_identical_outputs(tmp_path):
    model = UNet(width=4, out_channels=5).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model=model.state_dict(), model_config=model.config.to_dict(), target=None)
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    x = torch.rand(2, 1, 64, 128)
    with torch.inference_mode():
        assert torch.equal(model(x), rebuilt(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_corrupted_checkpoint_named(tmp_path):
    from ensemble.core.errors import RunError

    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(RunError, match="bad.pt"):
        load_checkpoint(path)


def test_baseline_parameters_within_15_percent():
    for width in (4, 8):
        members = members_parameter_count(width, 3)
        base_width = matched_baseline_width(width, 3)
        base = count_parameters(UNet(UNetConfig.from_dict(model_config(base_width, 3, 5))))
        assert abs(base - members) / members < 0.15, (width, base, members)


def _weights(run, name):
    return load_checkpoint(os.path.join(run, "members", name, "latest.pt"))["model"]


@pytest.mark.parametrize("target, ignores", [(None, True), (2, True), (0, False)])
def test_competition_losses_ignore_unlabeled_pixels(target, ignores):
    """Baseline and terrain members never see unlabeled pixels; the background member learns them."""
    torch.manual_seed(0)
    masks = torch.randint(0, 5, (2, 8, 8))
    masks[:, :2] = 0  # two rows unlabeled
    config = TrainConfig(name="x", target=target, loss="ce" if target is None else "bce_dice", objective="competition")
    channels = 5 if target is None else 1
    loss_fn = build_loss(config, masks.numpy().astype(np.uint8))
    goal, valid = targets_and_valid(config, masks)
    logits = torch.randn(2, channels, 8, 8, requires_grad=True)
    loss_fn(logits, goal, valid).backward()
    unlabeled_grad = logits.grad[:, :, :2].abs().sum()
    assert (float(unlabeled_grad) == 0) is ignores
    if target is None:  # class 0 has no say: its logit gets no gradient anywhere
        assert float(logits.grad[:, 0].abs().sum()) == 0
    full = TrainConfig(name="x", target=target, loss=config.loss, objective="fullmask")
    logits.grad = None
    build_loss(full, masks.numpy().astype(np.uint8))(logits, *targets_and_valid(full, masks)).backward()
    assert float(logits.grad[:, :, :2].abs().sum()) > 0  # fullmask: every pixel counts


def test_validation_score_follows_the_objective():
    masks = np.array([[[0, 0, 1, 2]]], dtype=np.uint8)
    class_logits = torch.tensor([[[[9.0, 9, 0, 0]], [[0.0, 1, 5, 0]], [[0.0, 0, 0, 5]], [[1.0, 0, 0, 0]],
                                  [[0.0, 0, 0, 0]]]])  # argmax 0,0,1,2 ; over classes 1-4: 3,1,1,2
    competition = TrainConfig(name="baseline", objective="competition")
    fullmask = TrainConfig(name="baseline", objective="fullmask")
    assert validation_score(competition, class_logits, masks) == pytest.approx(1.0)  # labeled pixels all right
    # allpixels: classes 1 and 2 right, class 3 absent -> mean over 1-2 = 1
    assert validation_score(fullmask, class_logits, masks) == pytest.approx(1.0)
    class_logits[0, 0, 0, 2] = 10  # predict 0 on a labeled soil pixel
    assert validation_score(competition, class_logits, masks) == pytest.approx(1.0)  # never predicts 0
    assert validation_score(fullmask, class_logits, masks) == pytest.approx(0.5)  # soil missed: (0 + 1) / 2
    member_logits = torch.tensor([[[[5.0, 5.0, 5.0, -5.0]]]])  # soil member says yes on two unlabeled pixels
    soil = TrainConfig(name="soil", target=1, objective="competition")
    assert validation_score(soil, member_logits, masks) == pytest.approx(1.0)
    assert validation_score(TrainConfig(name="soil", target=1, objective="fullmask"), member_logits, masks) == \
        pytest.approx(1 / 3)


def test_objective_is_fixed_with_the_run(tmp_path, subset_path):
    run = str(tmp_path / "run")
    api.train(data=str(subset_path), run=run, members="sand", **{**TINY, "objective": "fullmask"})
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["objective"] == "fullmask"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["networks"]["sand"]["objective"] == "fullmask"
    again = api.train(data=str(subset_path), run=run, members="sand", **TINY)  # no objective: the run's
    assert again[0]["skipped"]
    with pytest.raises(RunError, match="objective='fullmask' \\(asked 'competition'\\)"):
        api.train(data=str(subset_path), run=run, members="sand", **{**TINY, "objective": "competition"})


def test_jobs2_equals_jobs1_and_skips_finished(tmp_path, subset_path, monkeypatch):
    """Two joblib workers train exactly what one process trains: weights bitwise equal, every epoch's loss equal.

    Both sides get one torch thread (``machine_cores`` pinned to the job count, so cores // jobs = 1 on any
    machine): the thread count changes float summation order, and with it the weights by up to ~1e-2, as
    much as a wrong step (lr 3e-3), so only equal thread counts make exact equality the test.
    """
    import members.parallel

    runs, threads = {}, torch.get_num_threads()
    for jobs in (1, 2):
        monkeypatch.setattr(members.parallel, "machine_cores", lambda jobs=jobs: jobs)
        run = tmp_path / f"jobs{jobs}"
        results = api.train(data=str(subset_path), run=str(run), members="soil,big_rock", jobs=jobs,
                            **{**TINY, "epochs": 2})
        assert all(r["finished"] and r["epochs_run"] == 2 for r in results)
        runs[jobs] = run
    torch.set_num_threads(threads)  # jobs 1 trained in this process and set its thread count
    for name in ("soil", "big_rock"):
        a, b = _weights(runs[1], name), _weights(runs[2], name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
        history = [json.loads((runs[j] / "members" / name / "metrics.json").read_text())["history"] for j in (1, 2)]
        for key in ("loss", "val_iou"):
            assert np.array_equal(*([h[key] for h in history[j]] for j in (0, 1)), equal_nan=True), (name, key)
    metrics = json.loads((runs[1] / "members" / "soil" / "metrics.json").read_text())
    assert 0.0 <= metrics["best_val_iou"] <= 1.0 and metrics["history"]
    before = (runs[1] / "members" / "soil" / "best.pt").read_bytes()
    again = api.train(data=str(subset_path), run=str(runs[1]), members="soil", **{**TINY, "epochs": 2})
    assert again[0]["skipped"] and (runs[1] / "members" / "soil" / "best.pt").read_bytes() == before
    # the two workers read one shared copy of the split, which the command removed when they were done
    assert not list(Path(members.parallel._split_root()).glob(f"{members.parallel.SPLIT_PREFIX}{os.getpid()}-*"))


def test_a_killed_commands_shared_split_is_removed_by_the_next(tmp_path):
    import members.parallel as parallel

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    orphan = tmp_path / f"{parallel.SPLIT_PREFIX}{dead.pid}-abc"
    mine = tmp_path / f"{parallel.SPLIT_PREFIX}{os.getpid()}-abc"
    for folder in (orphan, mine):
        folder.mkdir()
        (folder / "train_images.npy").write_bytes(b"x")
    parallel._remove_orphans(tmp_path)
    assert not orphan.exists() and mine.exists()


def test_baseline_matches_members_and_writes_metrics(tmp_path, subset_path):
    run = tmp_path / "run"
    api.train(data=str(subset_path), run=str(run), members="sand", **TINY)
    metrics = api.baseline(data=str(subset_path), run=str(run), **{**TINY, "width": None})
    assert metrics["finished"] and np.isfinite(metrics["best_val_iou"])
    config = json.loads((run / "config.json").read_text())
    assert config["networks"]["baseline"]["model"]["out_channels"] == 5
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["sha256"] and manifest["split"]["val_groups"] and manifest["versions"]["torch"]
    train_groups = set(np.load(subset_path)["training_groups"][manifest["split"]["train_indices"]])
    assert not train_groups & set(manifest["split"]["val_groups"])


def test_interrupted_training_resumes(tmp_path, subset_path):
    """Kill ``ensemble train`` during the second member; rerun continues it, skips the first."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ensemble", "train", "--data", str(subset_path), "--run", str(run),
           "--members", "soil,sand", "--epochs", "3", "--width", "4", "--samples-per-epoch", "48", "--seed", "1",
           "--jobs", "1"]  # one after the other: soil finishes, sand is killed mid-training
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sand_latest = run / "members" / "sand" / "latest.pt"
    deadline = time.time() + 240
    while not sand_latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert sand_latest.exists(), "sand never started"
    soil_best = (run / "members" / "soil" / "best.pt").read_bytes()
    epoch_at_kill = load_checkpoint(sand_latest)["epoch"]
    assert epoch_at_kill < 3
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming" in out.stderr and "[soil]" not in out.stderr
    assert (run / "members" / "soil" / "best.pt").read_bytes() == soil_best
    # the resumed member ends where an uninterrupted run with the same seed ends
    fresh = tmp_path / "fresh"
    clean = subprocess.run([*cmd[:7], str(fresh), *cmd[8:]], env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    a, b = _weights(run, "sand"), _weights(fresh, "sand")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_manifest_records_torchvision_without_importing_it():
    """A new run's manifest records torchvision's version as the package says it, read without loading it."""
    code = ("import sys\n"
            "from ensemble.core.runsetup import package_versions\n"
            "recorded = package_versions()['torchvision']\n"
            "assert 'torchvision' not in sys.modules\n"
            "import torchvision\n"
            "assert recorded == torchvision.__version__, (recorded, torchvision.__version__)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
