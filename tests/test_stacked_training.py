"""Training members stacked (``ensemble train --stacked``): own gradients, own schedules, resume, CLI."""
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, assert_one_line_error  # noqa: E402

import members.training as training
from ensemble.cli import main
from ensemble.core.classes import class_index
from ensemble.core.data import load_data
from members.batches import SplitArrays
from members.checkpoint import load_checkpoint
from members.config import TrainConfig
from members.stacked_training import MemberStack, check_stackable, train_stacked
from members.training import NetworkTrainer, train_network
from members.unet import UNet

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


@pytest.fixture
def float64():
    """Build networks and losses in float64 (on one torch thread) for the test; restore both after it."""
    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # earlier in-process training may have set cores // jobs threads
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
        torch.set_num_threads(threads)


def test_stacked_training_matches_independent_training(tmp_path, subset, float64):
    """Stacked and independent training take the same steps: in float64 every epoch's loss and the weights after
    two epochs agree to float64 rounding (measured: losses equal, weights within 2e-13).

    In float32 they differ by rounding that Adam amplifies (weights by up to ~3e-3 after six steps, as much as a
    wrong step), so the comparison runs in float64, where the tolerances below (1e-9) are far under what a wrong
    learning rate, sampler or augmentation stream causes: a 1 % larger learning rate for one member moves its
    second-epoch loss by 2e-4 (relative) and its weights by 4e-3; another epoch's batches change the loss by > 1e-2.
    """
    data, train_idx, val_idx = subset
    images = data.images.astype(np.float64)
    configs = [_config(name, batch_size=8, samples_per_epoch=16, val_tiles=16) for name in MEMBERS]
    split = SplitArrays.select(images, data.masks, train_idx, val_idx)
    alone = [train_network(c, split, tmp_path / "alone" / c.name, log=None) for c in configs]
    together = train_stacked(configs, split, out_dirs=[tmp_path / "stacked" / c.name for c in configs], log=None)
    for c, a, s in zip(configs, alone, together):
        assert s["stacked"] and s["epochs_run"] == a["epochs_run"] == 2
        for epoch_a, epoch_s in zip(a["history"], s["history"], strict=True):
            assert epoch_s["loss"] == pytest.approx(epoch_a["loss"], rel=1e-9, abs=0), (c.name, epoch_a["epoch"])
            assert epoch_s["val_iou"] == epoch_a["val_iou"] or np.isnan(epoch_a["val_iou"]), c.name
        wa = load_checkpoint(tmp_path / "alone" / c.name / "latest.pt")["model"]
        ws = load_checkpoint(tmp_path / "stacked" / c.name / "latest.pt")["model"]
        assert wa["head.weight"].dtype == torch.float64
        assert max(float((wa[k] - ws[k]).abs().max()) for k in wa if wa[k].is_floating_point()) < 1e-9, c.name


def test_stacked_training_channels_last_matches_nchw(tmp_path, subset, monkeypatch):
    """One stacked epoch in NCHW and in channels-last layout: the same losses within float rounding."""
    data, train_idx, val_idx = subset
    configs = [_config(name, epochs=1) for name in ("soil", "big_rock")]
    results = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        monkeypatch.setattr(training, "MEMORY_FORMAT", layout)
        results[layout] = train_stacked(configs, SplitArrays.select(data.images, data.masks, train_idx, val_idx),
                                        out_dirs=[tmp_path / str(layout) / c.name for c in configs], log=None)
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
    results = train_stacked([frozen, short, longer], SplitArrays.select(data.images, data.masks, train_idx, val_idx),
                            out_dirs=[tmp_path / c.name for c in (frozen, short, longer)], log=None)
    assert [r["epochs_run"] for r in results] == [2, 1, 3]
    weights = load_checkpoint(tmp_path / "background" / "latest.pt")["model"]
    for name, _ in UNet(**MODEL).named_parameters():
        assert torch.equal(weights[name], initial[name]), name  # lr 0: its parameters never moved
    assert load_checkpoint(tmp_path / "soil" / "latest.pt")["epoch"] == 1  # stopped: never written again


#: Runs ``ensemble train ARGS`` with one torch thread, SIGKILLing itself at WHEN: ``mid-epoch`` (right after the
#: first optimiser step of epoch 2: weights moved in memory, nothing saved) or ``between-members`` (right after
#: the first member wrote ``latest.pt`` of epoch 2, before the second did), or ``never``.
_KILL_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import members.parallel
    import members.training as training
    from ensemble.cli import main

    when, args = sys.argv[1], sys.argv[2:]
    real_step, real_save = training.NetworkTrainer.step, training.save_checkpoint

    def step(self):
        real_step(self)
        if when == "mid-epoch" and self.epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def save(path, **state):
        real_save(path, **state)
        if when == "between-members" and path.name == "latest.pt" and state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    training.NetworkTrainer.step, training.save_checkpoint = step, save
    members.parallel.machine_cores = lambda: 1  # the same single torch thread in every run, on any machine
    main(args)
""")


def test_sigkilled_stacked_training_resumes(tmp_path, subset_path):
    """``ensemble train --stacked`` killed with SIGKILL mid-epoch, then between two members' writes (members left
    at epochs 2 and 1: the one behind trains alone first), each time rerun, ends where an uninterrupted run ends.

    The member that was ahead ends bitwise equal. The one behind trains its catch-up epoch in a stack of one,
    whose convolutions round differently from the two-member stack: its weights agree within float32 rounding
    (measured 1.5e-6), far under what a lost or repeated step, a wrong schedule or another epoch's batches
    cause (weights move by ~1e-3 per step at lr 3e-3).
    """
    names = ("soil", "big_rock")

    def train(run, when="never"):
        cmd = [sys.executable, "-c", _KILL_DRIVER, when, "train", "--stacked", "--data", str(subset_path), "--run",
               str(run), "--members", ",".join(names), "--epochs", "3", "--width", "4", "--samples-per-epoch", "48",
               "--seed", "1"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    def epochs_on_disk(run):
        return [load_checkpoint(run / "members" / n / "latest.pt")["epoch"] for n in names]

    straight = train(tmp_path / "straight")
    assert straight.returncode == 0, straight.stdout + straight.stderr
    run = tmp_path / "killed"
    killed = train(run, "mid-epoch")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert epochs_on_disk(run) == [1, 1]
    killed = train(run, "between-members")  # resumes both from epoch 1, dies after soil saved epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert "[soil] resuming" in killed.stderr and "after epoch 1" in killed.stderr
    assert epochs_on_disk(run) == [2, 1]
    assert not any((run / "members" / n / "metrics.json").exists() for n in names)
    resumed = train(run)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stderr
    assert "[soil] resuming" in out and "after epoch 2" in out and "[big_rock] epoch 2/3" in out
    assert "[soil] epoch 2/3" not in out  # the member ahead waits while the one behind catches up
    assert out.index("[big_rock] epoch 2/3") < out.index("[soil] epoch 3/3")
    for name in names:
        metrics = json.loads((run / "members" / name / "metrics.json").read_text())
        assert metrics["finished"] and metrics["epochs_run"] == 3
        a = load_checkpoint(tmp_path / "straight" / "members" / name / "latest.pt")
        b = load_checkpoint(run / "members" / name / "latest.pt")
        # the member that caught up alone rounds differently (below); its last loss agrees to 1e-4, where a lost
        # epoch or optimizer state moves it by about 1e-2
        tolerance = 1e-6 if name == "soil" else 1e-4
        assert a["epoch"] == b["epoch"] == 3
        assert a["history"][-1]["loss"] == pytest.approx(b["history"][-1]["loss"], rel=tolerance), name
        if name == "soil":
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
        else:
            # big rock caught up alone, in a one-member stack whose kernels round differently; Adam's first
            # steps amplify that (measured 1.5e-6 in NCHW, 2.6e-4 in channels-last), while a resume that lost
            # the optimizer state or an epoch moves weights by ~lr = 3e-3 per step
            assert max(float((a["model"][k].double() - b["model"][k].double()).abs().max()) for k in a["model"]) \
                < 1e-3, name


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
