"""Training members stacked (``ensemble train --stacked``): own gradients, own schedules, resume, CLI."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import members.stacked_training as stacked_training
import members.training as training
from ensemble.core.classes import class_index
from ensemble.cli import main
from ensemble.core.data import load_data
from members.checkpoint import load_checkpoint
from members.stacked_training import MemberStack, check_stackable, train_stacked
from members.training import NetworkTrainer, SplitArrays, TrainConfig, train_network
from members.unet import UNet

from conftest import TINY, assert_one_line_error  # noqa: E402

MODEL = dict(out_channels=1, width=4, depth=3, in_channels=1, bottleneck="dilated_se", upsample="transpose",
             dropout=0.0)
MEMBERS = ("background", "soil", "big_rock")


def _config(name, **overrides):
    values = dict(name=name, target=class_index(name), model=dict(MODEL), epochs=2, batch_size=16, samples_per_epoch=48,
                  val_tiles=32, sampler_weight=4.0 if name == "big_rock" else 1.0)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def subset(subset_path):
    """The real subset with a fixed split by index."""
    data = load_data(subset_path)
    n = len(data.images)
    return data, np.arange(n - 64), np.arange(n - 64, n)


def _models(seed=0):
    torch.manual_seed(seed)
    return [UNet(**MODEL) for _ in MEMBERS]


def test_member_stack_equals_members_and_updates_their_statistics():
    models, twins = _models(), _models()
    stack = MemberStack(models).train()
    x = torch.rand(4, len(models), 64, 128)
    out = stack(x)
    for k, twin in enumerate(twins):
        expected = twin.train()(x[:, k : k + 1])
        torch.testing.assert_close(out[:, k : k + 1], expected, rtol=0, atol=1e-5)
        for (name, a), b in zip(models[k].named_buffers(), twin.buffers()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    shared = torch.rand(2, 1, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(stack.eval()(shared), torch.cat([t.eval()(shared) for t in twins], 1),
                                   rtol=0, atol=1e-5)


def test_one_members_loss_leaves_the_others_gradients_alone():
    models, twins = _models(), _models()
    x = torch.rand(3, len(models), 64, 128)
    MemberStack(models).train()(x)[:, 1].square().mean().backward()
    for k in (0, 2):
        assert all(p.grad is None or not p.grad.any() for p in models[k].parameters())
    twins[1].train()(x[:, 1:2])[:, 0].square().mean().backward()
    for p, q in zip(models[1].parameters(), twins[1].parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_stacked_training_matches_independent_training(tmp_path, subset):
    data, train_idx, val_idx = subset
    configs = [_config(name) for name in MEMBERS]
    alone = [train_network(c, data.images, data.masks, train_idx, val_idx, tmp_path / "alone" / c.name, log=None)
             for c in configs]
    together = train_stacked(configs, data.images, data.masks, train_idx, val_idx,
                             [tmp_path / "stacked" / c.name for c in configs], log=None)
    for c, a, s in zip(configs, alone, together):
        assert s["stacked"] and s["epochs_run"] == a["epochs_run"] == 2
        # Same batches (own sampler and augmentation stream); only float rounding differs.
        assert s["history"][0]["loss"] == pytest.approx(a["history"][0]["loss"], rel=1e-4)
        assert abs(s["best_val_iou"] - a["best_val_iou"]) < 0.02, c.name
        wa = load_checkpoint(tmp_path / "alone" / c.name / "latest.pt")["model"]
        ws = load_checkpoint(tmp_path / "stacked" / c.name / "latest.pt")["model"]
        assert max(float((wa[k].float() - ws[k].float()).abs().max()) for k in wa) < 0.02


def test_stacked_training_channels_last_matches_nchw(tmp_path, subset, monkeypatch):
    """One stacked epoch in NCHW and in channels-last layout: the same losses within float rounding."""
    data, train_idx, val_idx = subset
    configs = [_config(name, epochs=1) for name in ("soil", "big_rock")]
    results = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        monkeypatch.setattr(training, "MEMORY_FORMAT", layout)
        results[layout] = train_stacked(configs, data.images, data.masks, train_idx, val_idx,
                                        [tmp_path / str(layout) / c.name for c in configs], log=None)
    for nchw, last in zip(results[torch.contiguous_format], results[torch.channels_last]):
        assert last["history"][0]["loss"] == pytest.approx(nchw["history"][0]["loss"], rel=1e-4)
        assert last["best_val_iou"] == pytest.approx(nchw["best_val_iou"], abs=1e-3)


def test_each_member_keeps_its_learning_rate_and_epochs(tmp_path, subset):
    data, train_idx, val_idx = subset
    frozen = _config("background", lr=0.0)
    short = _config("soil", epochs=1)
    longer = _config("big_rock", epochs=3)
    torch.manual_seed(frozen.network_seed())
    initial = UNet(**MODEL).state_dict()
    results = train_stacked([frozen, short, longer], data.images, data.masks, train_idx, val_idx,
                            [tmp_path / c.name for c in (frozen, short, longer)], log=None)
    assert [r["epochs_run"] for r in results] == [2, 1, 3]
    weights = load_checkpoint(tmp_path / "background" / "latest.pt")["model"]
    for name, param in UNet(**MODEL).named_parameters():
        assert torch.equal(weights[name], initial[name]), name  # lr 0: its parameters never moved
    assert load_checkpoint(tmp_path / "soil" / "latest.pt")["epoch"] == 1  # stopped: never written again


def test_interrupted_stacked_training_resumes_exactly(tmp_path, subset, monkeypatch):
    data, train_idx, val_idx = subset
    configs = [_config(name) for name in ("soil", "big_rock")]
    args = (configs, data.images, data.masks, train_idx, val_idx)
    train_stacked(*args, [tmp_path / "straight" / c.name for c in configs], log=None)

    real, calls = stacked_training.stacked_epoch, []

    def interrupted(trainers):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(trainers)

    monkeypatch.setattr(stacked_training, "stacked_epoch", interrupted)
    out_dirs = [tmp_path / "resumed" / c.name for c in configs]
    with pytest.raises(KeyboardInterrupt):
        train_stacked(*args, out_dirs, log=None)
    monkeypatch.setattr(stacked_training, "stacked_epoch", real)
    lines = []
    results = train_stacked(*args, out_dirs, log=lines.append)
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    assert [r["epochs_run"] for r in results] == [2, 2]
    for c in configs:
        a = load_checkpoint(tmp_path / "straight" / c.name / "latest.pt")["model"]
        b = load_checkpoint(tmp_path / "resumed" / c.name / "latest.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), c.name


def test_only_compatible_members_stack(subset, tmp_path):
    data, train_idx, val_idx = subset
    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)

    def trainer(config):
        return NetworkTrainer(config, split, tmp_path / config.name)

    with pytest.raises(ValueError, match="batch_size"):
        check_stackable([trainer(_config("soil")), trainer(_config("sand", batch_size=8))])
    with pytest.raises(ValueError, match="width"):
        check_stackable([trainer(_config("soil")), trainer(_config("sand", model={**MODEL, "width": 8}))])
    baseline = TrainConfig(name="baseline", model={**MODEL, "out_channels": 5}, loss="ce")
    with pytest.raises(ValueError, match="multiclass baseline"):
        check_stackable([trainer(_config("soil")), trainer(baseline)])


def test_cli_train_stacked(tmp_path, subset_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(subset_path), "--run", str(run), "--members", "soil,sand", "--stacked",
            "--epochs", str(TINY["epochs"]), "--width", str(TINY["width"]),
            "--samples-per-epoch", str(TINY["samples_per_epoch"]), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("soil", "sand"):
        metrics = json.loads((run / "members" / name / "metrics.json").read_text())
        assert metrics["finished"] and metrics["stacked"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert "members/soil/best.pt" in manifest["checksums"]
    again = CliRunner().invoke(main, args)  # finished members are skipped
    assert again.exit_code == 0 and again.output.count("already done") == 2, again.output
    assert_one_line_error(CliRunner().invoke(main, [*args, "--jobs", "2"]), "--stacked", "--jobs")
