"""Early stopping on a scripted validation curve: ``patience`` epochs without improvement, then stop.

The validation score is replaced by a chosen curve (``members.training.validation_score``),
so the epoch at which training stops and the epoch ``best.pt`` holds are known in advance.
Both the single-network loop (:func:`train_network`) and stacked training use
:meth:`NetworkTrainer.active`, and both are checked.
"""
import copy

import numpy as np
import pytest
import torch

import members.training as training
from ensemble.core.classes import class_index
from ensemble.core.data import load_data
from members.batches import SplitArrays
from members.checkpoint import load_checkpoint
from members.config import TrainConfig
from members.stacked_training import train_stacked
from members.training import NetworkTrainer, train_network

MODEL = dict(out_channels=1, width=4, depth=3, in_channels=1, bottleneck="dilated_se", upsample="transpose",
             dropout=0.0)

#: Best at epoch 5; epochs 6-9 do not improve (a tie at 7 is no improvement); 10+ would improve.
CURVE = [0.10, 0.20, 0.30, 0.40, 0.50, 0.45, 0.50, 0.30, 0.20, 0.90, 0.95, 0.99]


@pytest.fixture(scope="module")
def subset(subset_path):
    data = load_data(subset_path)
    n = len(data.images)
    return data, np.arange(n - 32), np.arange(n - 32, n)


def _config(name, **overrides):
    values = dict(name=name, target=class_index(name), model=dict(MODEL), epochs=len(CURVE), batch_size=16,
                  samples_per_epoch=16, val_tiles=8, patience=4, augment={})
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def scripted(monkeypatch):
    """Replace the validation score by ``curves[name]`` (one value per epoch) and snapshot weights per epoch."""
    curves, snapshots = {}, {}
    real_end_epoch = NetworkTrainer.end_epoch

    def score(config, logits, masks):
        return curves[config.name][len(snapshots.setdefault(config.name, []))]

    def end_epoch(self, val_logits, mean_loss, seconds, val_seconds=0.0):
        weights = copy.deepcopy(self.model.state_dict())  # the weights this epoch is scored with
        real_end_epoch(self, val_logits, mean_loss, seconds, val_seconds)
        snapshots[self.config.name].append(weights)

    monkeypatch.setattr(training, "validation_score", score)
    monkeypatch.setattr(NetworkTrainer, "end_epoch", end_epoch)
    return curves, snapshots


def _check_best(out_dir, snapshots, best_epoch, best_score):
    best = load_checkpoint(out_dir / "best.pt")
    assert best["epoch"] == best_epoch and best["val_iou"] == pytest.approx(best_score)
    held = snapshots[best_epoch - 1]
    assert all(torch.equal(best["model"][k], held[k]) for k in held)
    last = snapshots[-1]
    assert not all(torch.equal(best["model"][k], last[k]) for k in last), "weights never changed after the best"


def test_patience_counts_epochs_without_improvement(tmp_path, subset, scripted):
    data, train_idx, val_idx = subset
    curves, snapshots = scripted
    curves["soil"] = CURVE
    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)
    metrics = train_network(_config("soil"), split, tmp_path / "soil", log=None)
    # best at 5, then 6, 7, 8, 9 without improvement: patience 4 stops after epoch 9
    assert metrics["epochs_run"] == 9 and len(snapshots["soil"]) == 9
    assert metrics["best_epoch"] == 5 and metrics["best_val_iou"] == pytest.approx(0.50)
    assert metrics["stopped_early"]
    assert [h["val_iou"] for h in metrics["history"]] == pytest.approx(CURVE[:9])
    _check_best(tmp_path / "soil", snapshots["soil"], 5, 0.50)
    assert load_checkpoint(tmp_path / "soil" / "latest.pt")["epoch"] == 9


@pytest.mark.parametrize("patience, epochs_run", [(1, 6), (2, 7)])
def test_small_patience(tmp_path, subset, scripted, patience, epochs_run):
    data, train_idx, val_idx = subset
    curves, snapshots = scripted
    curves["soil"] = CURVE
    config = _config("soil", patience=patience)
    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)
    metrics = train_network(config, split, tmp_path / "soil", log=None)
    assert metrics["epochs_run"] == epochs_run and metrics["best_epoch"] == 5


def test_no_early_stop_while_improving(tmp_path, subset, scripted):
    data, train_idx, val_idx = subset
    curves, snapshots = scripted
    curves["soil"] = [0.1, 0.2, 0.3, 0.2, 0.4, 0.3]
    config = _config("soil", epochs=6, patience=2)
    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)
    metrics = train_network(config, split, tmp_path / "soil", log=None)
    assert metrics["epochs_run"] == 6 and metrics["best_epoch"] == 5 and not metrics["stopped_early"]


def test_stacked_training_stops_each_member_on_its_own_curve(tmp_path, subset, scripted):
    data, train_idx, val_idx = subset
    curves, snapshots = scripted
    curves["soil"] = CURVE  # best 5, stops after 9
    curves["sand"] = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]  # best 1, stops after 5
    configs = [_config("soil"), _config("sand")]
    results = train_stacked(configs, SplitArrays.select(data.images, data.masks, train_idx, val_idx),
                            out_dirs=[tmp_path / c.name for c in configs], log=None)
    assert [r["epochs_run"] for r in results] == [9, 5]
    assert [r["best_epoch"] for r in results] == [5, 1]
    _check_best(tmp_path / "soil", snapshots["soil"], 5, 0.50)
    _check_best(tmp_path / "sand", snapshots["sand"], 1, 0.30)
