"""Recipe settings (issue 14): --set overrides, the per-step schedule, the weight average, patience 0,
snapshots for the budget curve, the ensembling control and the budget curve itself."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, assert_one_line_error

from ensemble import api
from ensemble.cli import main
from ensemble.core.data import load_data
from ensemble.core.errors import RunError
from members.batches import SplitArrays
from members.checkpoint import load_checkpoint
from members.config import TrainConfig
from members.optim import WeightAverage, build_scheduler
from members.overrides import apply_overrides, parse_override
from members.training import NetworkTrainer, train_network
from members.unet import model_config


def _split(data):
    n = len(data.images)
    return np.arange(n - 32), np.arange(n - 32, n)


def _tiny_config(**changes):
    base = dict(name="soil", target=1, model=model_config(4, 3, 1), epochs=2, batch_size=16, samples_per_epoch=48)
    return TrainConfig(**{**base, **changes})


# --- overrides -------------------------------------------------------------------------------------------------------

def test_overrides_scope_nesting_and_types():
    member = TrainConfig(name="big_rock", target=4, model=model_config(8, 3, 1)).to_dict()
    baseline = TrainConfig(name="baseline", model=model_config(18, 3, 5)).to_dict()
    control = TrainConfig(name="control_1", replica=1, model=model_config(8, 3, 5)).to_dict()
    overrides = [parse_override(t) for t in ("lr=1", "model.dropout=0.2", "augment.hflip=false",
                                             "baseline:sampler_weight=4", "members:weight_decay=0.01",
                                             "multiclass:ema_decay=0.99", "big_rock:pos_weight=3",
                                             "schedule=cosine", "snapshot_fractions=[0.5, 1]")]
    m, b, c = (apply_overrides(d, d["name"], overrides) for d in (member, baseline, control))
    assert m["lr"] == b["lr"] == 1.0 and isinstance(m["lr"], float)  # an int where a float is expected
    assert m["model"]["dropout"] == 0.2 and m["augment"]["hflip"] is False and m["schedule"] == "cosine"
    assert (b["sampler_weight"], m["sampler_weight"], c["sampler_weight"]) == (4.0, 1.0, 1.0)
    assert (m["weight_decay"], b["weight_decay"]) == (0.01, 1e-4)
    assert (m["ema_decay"], b["ema_decay"], c["ema_decay"]) == (0.0, 0.99, 0.99)
    assert m["pos_weight"] == 3 and b["pos_weight"] is None and m["snapshot_fractions"] == [0.5, 1]
    assert member["lr"] == 2e-3 and member["model"]["dropout"] == 0.0  # the input is not changed


@pytest.mark.parametrize("text, fragment", [
    ("lr", "expected [SCOPE:]KEY=VALUE"),
    ("nope:lr=1", "unknown scope 'nope'"),
])
def test_malformed_overrides_are_refused(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        parse_override(text)


@pytest.mark.parametrize("text, fragment", [
    ("foo=1", "foo: unknown setting"),
    ("model.nope=1", "model.nope: unknown setting"),
    ("model=1", "model: unknown setting"),
    ("lr=fast", 'expected a float like 0.002'),
    ("augment.hflip=1", "expected a bool"),
    ("seed=3", "seed: fixed"),
    ("model.out_channels=2", "fixed"),
])
def test_bad_override_values_are_refused(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        apply_overrides(TrainConfig(name="soil", target=1, model=model_config(8, 3, 1)).to_dict(), "soil",
                        [parse_override(text)])


@pytest.mark.parametrize("setting, fragment", [
    ("foo=1", "--set foo: unknown setting"),
    ("schedule=step", "--set schedule: unknown 'step'"),
    ("ema_decay=1.5", "--set ema_decay: 1.5 is outside"),
    ("snapshot_fractions=[0, 1]", "--set snapshot_fractions"),
])
def test_cli_refuses_a_bad_set_before_writing_anything(tmp_path, subset_path, setting, fragment):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(subset_path), "--run", str(run), "--set", setting])
    assert_one_line_error(result, fragment)
    assert not run.exists()


def test_set_is_recorded_and_a_changed_one_is_refused(tmp_path, subset_path):
    run = tmp_path / "run"
    options = dict(data=str(subset_path), run=str(run), members="soil", **TINY)
    api.train(overrides=["ema_decay=0.9", "soil:lr=0.01"], **options)
    recorded = json.loads((run / "config.json").read_text())["networks"]["soil"]
    assert recorded["ema_decay"] == 0.9 and recorded["lr"] == 0.01
    (run / "members" / "soil" / "metrics.json").unlink()  # started, not finished: settings are now fixed
    with pytest.raises(RunError, match="ema_decay"):
        api.train(overrides=["soil:lr=0.01"], **options)


def test_a_run_recorded_before_the_recipe_settings_continues(tmp_path, subset_path):
    """config.json written by an older version (without the recipe keys) is continued, not refused: a key it
    lacks is read as the value that version trained with (``ensemble.TRAIN_CONFIG_V1_DEFAULTS``)."""
    from ensemble.train import recorded_defaults

    run = tmp_path / "run"
    options = dict(data=str(subset_path), run=str(run), members="soil", **TINY)
    api.train(**options)
    config = json.loads((run / "config.json").read_text())
    defaults = recorded_defaults()
    recipe_keys = ("schedule", "warmup_epochs", "min_lr_ratio", "ema_decay", "snapshot_fractions", "replica")
    stripped = [k for k in recipe_keys if config["networks"]["soil"][k] == defaults[k]]
    assert stripped
    for key in stripped:  # an older version wrote no such key: it trained with the table's value
        del config["networks"]["soil"][key]
    (run / "config.json").write_text(json.dumps(config))
    (run / "members" / "soil" / "metrics.json").unlink()  # started (latest.pt), not finished
    api.train(**options)
    assert json.loads((run / "members" / "soil" / "metrics.json").read_text())["finished"]
    with pytest.raises(RunError, match="ema_decay"):  # a real change is still refused
        (run / "members" / "soil" / "metrics.json").unlink()
        api.train(overrides=["ema_decay=0.5"], **options)


# --- schedule, weight average, patience ------------------------------------------------------------------------------

def test_cosine_schedule_warms_up_then_ends_at_the_floor():
    config = TrainConfig(name="soil", target=1, lr=0.01, epochs=3, schedule="cosine", warmup_epochs=1.0,
                         min_lr_ratio=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.002, 0.004, 0.006, 0.008])  # linear warm-up over one epoch
    assert lrs[4] == pytest.approx(0.01)  # the peak, then down
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.001)  # lr * min_lr_ratio at the last step


def test_per_step_schedule_reaches_the_floor_in_training(tmp_path, subset_path):
    data = load_data(subset_path)
    train_idx, val_idx = _split(data)
    config = _tiny_config(schedule="cosine", warmup_epochs=0.5, min_lr_ratio=0.0, lr=0.01)
    train_network(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), tmp_path / "net", log=None)
    ckpt = load_checkpoint(tmp_path / "net" / "latest.pt")
    assert ckpt["scheduler"]["last_epoch"] == 2 * config.steps_per_epoch(len(train_idx))  # stepped every batch
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_weight_average_follows_its_formula():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(7)
    average.update(model)  # d = min(0.5, 2 / 11)
    d = 2 / 11
    got = average.module.state_dict()
    assert torch.allclose(got["0.weight"], d * start["0.weight"] + (1 - d) * (start["0.weight"] + 1))
    assert torch.allclose(got["1.running_mean"], d * start["1.running_mean"] + (1 - d) * (start["1.running_mean"] + 2))
    assert int(got["1.num_batches_tracked"]) == 7  # integers are copied, not averaged
    assert not any(p.requires_grad for p in average.module.parameters())


def test_ema_is_validated_kept_and_resumed_exactly(tmp_path, subset_path, monkeypatch):
    data = load_data(subset_path)
    train_idx, val_idx = _split(data)
    config = _tiny_config(ema_decay=0.9, epochs=2)
    straight = tmp_path / "straight"
    train_network(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), straight, log=None)
    latest = load_checkpoint(straight / "latest.pt")
    best = load_checkpoint(straight / "best.pt")
    assert latest["ema"]["updates"] == 2 * config.steps_per_epoch(len(train_idx))
    if best["epoch"] == 2:  # best.pt holds the average, latest.pt the raw weights and the average apart
        assert all(torch.equal(best["model"][k], latest["ema"]["model"][k]) for k in best["model"])
        assert any(not torch.equal(best["model"][k], latest["model"][k]) for k in best["model"])
    # interrupted after one epoch, then the same call again: ends bitwise where the straight run ends
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        active = NetworkTrainer.active
        patch.setattr(NetworkTrainer, "active", lambda self: self.epoch < 1 and active(self))
        train_network(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), resumed, log=None)
    (resumed / "metrics.json").unlink()
    trainer = NetworkTrainer(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), resumed)
    assert trainer.epoch == 1 and trainer.average.updates == config.steps_per_epoch(len(train_idx))
    trainer.lock.release()  # one trainer of a network at a time
    train_network(config, SplitArrays.select(data.images, data.masks, train_idx, val_idx), resumed, log=None)
    again = load_checkpoint(resumed / "latest.pt")
    assert all(torch.equal(again["model"][k], latest["model"][k]) for k in latest["model"])
    assert all(torch.equal(again["ema"]["model"][k], latest["ema"]["model"][k]) for k in latest["ema"]["model"])


def test_patience_zero_never_stops_early(subset_path, tmp_path):
    data = load_data(subset_path)
    train_idx, val_idx = _split(data)
    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)
    for patience, expected in ((0, True), (2, False)):
        trainer = NetworkTrainer(_tiny_config(epochs=10, patience=patience), split, tmp_path / str(patience))
        trainer.state.update(epoch=5, best_epoch=1, best_score=0.5)  # four epochs without improvement
        assert trainer.active() is expected


# --- snapshots, control, budget curve --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, subset_path):
    """A tiny run with snapshots at epochs 1 and 2 of 2, a two-net control, two fusers (every point refits and scores
    each fitted fuser: one without parameters, one trained), and an evaluation with --curve."""
    run = tmp_path_factory.mktemp("curve") / "run"
    options = dict(data=str(subset_path), run=str(run), **{**TINY, "epochs": 2},
                   overrides=["snapshot_fractions=[0.5, 1]", "schedule=cosine", "patience=0"])
    api.train(members="all", jobs=1, **options)
    api.baseline(**{**options, "width": None})
    api.control(size=2, jobs=1, **{**options, "width": None})
    for strategy in ("argmax", "learned"):
        api.fuse(run=str(run), strategy=strategy, data=str(subset_path), quiet=True, engine="torch")
    result = api.evaluate(run=str(run), data=str(subset_path), curve=True, quiet=True, engine="torch", cross_fit=2)
    return run, result


def test_snapshots_are_kept_and_checksummed(curve_run):
    run, _ = curve_run
    manifest = json.loads((run / "manifest.json").read_text())
    for net in ("members/soil", "baseline", "control/control_0"):
        folder = run / net / "snapshots"
        assert sorted(p.name for p in folder.glob("*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
        assert (folder / "epoch_002.pt").read_bytes() == (run / net / "best.pt").read_bytes()
        assert f"{net}/snapshots/epoch_001.pt" in manifest["checksums"]
        assert load_checkpoint(folder / "epoch_001.pt")["epoch"] == 1


def test_control_is_multiclass_nets_of_the_members_width_averaged(curve_run, subset_path):
    run, result = curve_run
    config = json.loads((run / "config.json").read_text())["networks"]
    c0, c1 = config["control_0"], config["control_1"]
    assert c0["model"]["width"] == config["soil"]["model"]["width"] and c0["model"]["out_channels"] == 5
    assert (c0["replica"], c1["replica"], c0["loss"]) == (0, 1, config["baseline"]["loss"])
    w0 = load_checkpoint(run / "control/control_0/best.pt")["model"]
    w1 = load_checkpoint(run / "control/control_1/best.pt")["model"]
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # seeds apart
    assert "control" in result["table"]["models"] and "control" in result["table"]["differences"]
    # the control's probabilities are the mean of its nets' softmax (class 0 never predicted under competition)
    tiles = load_data(subset_path).images[:6]
    control = api.predictor(run=str(run), strategy="control", device="cpu", engine="torch")
    probs = control.predict_proba(tiles)
    means = []
    for name in ("control_0", "control_1"):
        from members.checkpoint import model_from_checkpoint

        net = model_from_checkpoint(load_checkpoint(run / "control" / name / "best.pt"))
        with torch.no_grad():
            logits = net(torch.from_numpy(tiles)[:, None])
        logits[:, 0] = -math.inf
        means.append(torch.softmax(logits, 1))
    assert np.allclose(probs, torch.stack(means).mean(0).numpy(), atol=1e-5)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and probs[:, 0].max() == 0


def test_budget_curve_points_and_end_point_match_the_evaluation(curve_run):
    run, result = curve_run
    table = result["table"]
    curve = json.loads((run / "evaluation" / "budget_curve.json").read_text())
    assert [p["epoch"] for p in curve["points"]] == [1, 2]
    last = curve["points"][-1]
    # the last point uses the same best.pt files, tiles and folds as the evaluation: the same scores
    for model in ("baseline", "baseline_bias", "control", "argmax", "learned"):
        assert last["miou"][model] == pytest.approx(table["models"][model]["miou"]["competition"], abs=1e-9), model
    assert last["tiles_seen"] == 2 * TINY["samples_per_epoch"]
    metrics = json.loads((run / "baseline" / "metrics.json").read_text())
    expected = sum(h["seconds"] * h["threads"] for h in metrics["history"][:1]) / curve["cores"] / 60
    assert curve["points"][0]["minutes"]["baseline"] == pytest.approx(expected)
    assert curve["points"][0]["minutes"]["members"] < last["minutes"]["members"]
    assert (run / "evaluation" / "budget_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run / "evaluation" / "report.md").read_text()
    assert "## Budget curve" in md and "budget_curve.png" in md and md.count("\n| 2 |") == 1


def test_budget_curve_refuses_a_tampered_snapshot(curve_run, tmp_path, subset_path):
    run, _ = curve_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "members" / "sand" / "snapshots" / "epoch_001.pt"
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(RunError, match="epoch_001.pt: sha256 differs"):
        api.evaluate(run=str(copy), data=str(subset_path), curve=True, quiet=True, engine="torch")


def test_budget_curve_without_snapshots_says_how_to_get_them(tiny_run, tmp_path, subset_path):
    from conftest import copy_run

    copy = copy_run(tiny_run, tmp_path)
    api.fuse(run=str(copy), strategy="argmax", data=str(subset_path), quiet=True, engine="torch")
    result = CliRunner().invoke(main, ["evaluate", "--run", str(copy), "--data", str(subset_path), "--curve",
                                       "--engine", "torch", "--quiet"])
    assert_one_line_error(result, "no snapshots for a budget curve", "snapshot_fractions")
