"""Train one network — a one-vs-rest member or the multiclass baseline — with resume and early stopping.

A network's folder holds ``latest.pt`` (written every epoch, with optimiser and
scheduler state), ``best.pt`` (the best validation epoch) and, once finished,
``metrics.json``. Each epoch draws its tile order and augmentation from a seed
derived from (seed, network, epoch), so a run resumed from ``latest.pt`` ends with
the same weights as one that was never interrupted.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ensemble.augment import AugmentConfig, build_augmentation
from ensemble.classes import CLASS_NAMES, NUM_CLASSES, TERRAIN_CLASSES
from ensemble.fileio import write_json_atomic
from ensemble.metrics import confusion_matrix, mean_iou

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import MemberLoss, MulticlassLoss, auto_class_weights, auto_pos_weight
from .unet import UNet, UNetConfig, count_parameters

BASELINE = "baseline"


@dataclass
class TrainConfig:
    """How to train one network. ``target`` is the member's class id, or ``None`` for the baseline."""

    name: str
    target: int = None
    model: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4
    samples_per_epoch: int = 0  # 0: every training tile once per epoch
    val_tiles: int = 0  # 0: the whole validation split every epoch
    sampler_weight: float = 1.0  # weight of tiles holding the target class (big rock for the baseline)
    loss: str = "bce_dice"
    pos_weight: float = None  # None: from the class's pixel share
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    ignore_background: bool = False
    augment: dict = field(default_factory=lambda: AugmentConfig().to_dict())
    seed: int = 0

    def to_dict(self):
        """Plain dict for JSON and checkpoints."""
        return asdict(self)

    @property
    def is_member(self):
        """True for a one-vs-rest member, False for the multiclass baseline."""
        return self.target is not None

    def network_seed(self):
        """Seed of this network: the run seed combined with its identity."""
        index = self.target if self.is_member else NUM_CLASSES
        return self.seed * 1009 + index


def build_loss(config, train_masks):
    """The loss of ``config`` with weights from the pixel shares of ``train_masks``."""
    counts = np.bincount(train_masks.ravel(), minlength=NUM_CLASSES).astype(np.float64)
    if config.is_member:
        valid = counts if (config.target == 0 or not config.ignore_background) else counts[1:]
        share = counts[config.target] / max(valid.sum(), 1)
        pos_weight = config.pos_weight if config.pos_weight is not None else auto_pos_weight(share)
        return MemberLoss(config.loss, pos_weight, config.dice_weight, config.focal_gamma)
    shares = counts / counts.sum()
    ignore = (0,) if config.ignore_background else ()
    return MulticlassLoss(config.loss, auto_class_weights(shares, ignore), config.focal_gamma)


def targets_and_valid(config, masks):
    """Training target and valid-pixel mask for a batch of masks (N, H, W) int64."""
    valid = None
    if config.ignore_background and config.target != 0:
        valid = masks > 0
    if config.is_member:
        return (masks == config.target).long(), valid
    return masks, valid


def epoch_order(config, train_masks, epoch):
    """Tile positions (into the training arrays) for one epoch, seeded by (seed, network, epoch)."""
    rng = np.random.default_rng([config.network_seed(), epoch])
    n = len(train_masks)
    size = config.samples_per_epoch or n
    if config.sampler_weight == 1.0:
        order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(size / n))])
        return order[:size]
    rare = TERRAIN_CLASSES[-1] if not config.is_member else config.target
    has = (train_masks == rare).any(axis=(1, 2))
    weights = np.where(has, config.sampler_weight, 1.0)
    return rng.choice(n, size=size, replace=True, p=weights / weights.sum())


def make_batch(images, masks, positions, augment):
    """Stack augmented tiles: images (B, 1, H, W) float32, masks (B, H, W) int64."""
    xs, ys = [], []
    for i in positions:
        x = torch.from_numpy(images[i])[None]
        y = torch.from_numpy(masks[i].astype(np.int64))
        if augment is not None:
            x, y = augment(x, y)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


@torch.inference_mode()
def predict_logits(model, images, device, batch_size=128):
    """Logits of ``model`` for float images (N, H, W) in eval mode, as a float32 CPU tensor."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size])[:, None].to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def validation_iou(config, model, images, masks, device):
    """The early-stopping score: the member's class IoU, or the baseline's mean IoU of classes 1-4."""
    logits = predict_logits(model, images, device)
    truth = masks.astype(np.int64)
    convention = "labeled" if config.ignore_background else "kaggle"
    if config.is_member:
        pred = logits[:, 0].numpy() > 0
        positive = truth == config.target
        if config.ignore_background and config.target != 0:
            keep = truth > 0
            pred, positive = pred & keep, positive & keep
        union = np.logical_or(pred, positive).sum()
        return float(np.logical_and(pred, positive).sum() / union) if union else float("nan")
    return mean_iou(confusion_matrix(truth, logits.argmax(1).numpy()), convention)


def _format_seconds(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train_network(config, images, masks, train_idx, val_idx, out_dir, device="cpu", log=print, data_sha256=None):
    """Train (or resume, or skip if finished) one network into ``out_dir``; return its metrics dict.

    ``images`` float32 (N, H, W) 0-1 and ``masks`` uint8 (N, H, W) are the whole
    training file; ``train_idx`` / ``val_idx`` select the split. ``log`` receives
    one line per epoch (pass ``None`` for silence). ``data_sha256`` is stored in the
    checkpoints so networks from different data files are never mixed.
    """
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("finished"):
            metrics["skipped"] = True
            return metrics
    log = log or (lambda line: None)
    device = torch.device(device)
    train_images, train_masks = images[train_idx], masks[train_idx]
    val_images, val_masks = images[val_idx], masks[val_idx]
    if config.val_tiles and config.val_tiles < len(val_idx):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(val_idx), config.val_tiles, replace=False))
        val_images, val_masks = val_images[pick], val_masks[pick]

    torch.manual_seed(config.network_seed())
    model = UNet(UNetConfig.from_dict(config.model)).to(device)
    loss_fn = build_loss(config, train_masks).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.05)
    augment = build_augmentation(AugmentConfig(**config.augment)) if config.augment else None
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "history": []}
    latest = out_dir / "latest.pt"
    if latest.exists():
        ckpt = load_checkpoint(latest, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = {k: ckpt[k] for k in state}
        log(f"[{config.name}] resuming from {latest} after epoch {state['epoch']}")

    params = count_parameters(model)
    while state["epoch"] < config.epochs and state["epoch"] - state["best_epoch"] <= config.patience:
        epoch = state["epoch"]
        started = time.perf_counter()
        torch.manual_seed(config.network_seed() * 7919 + epoch)
        model.train()
        order = epoch_order(config, train_masks, epoch)
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            x, y = make_batch(train_images, train_masks, order[start : start + config.batch_size], augment)
            x, y = x.to(device), y.to(device)
            target, valid = targets_and_valid(config, y)
            loss = loss_fn(model(x), target, valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        scheduler.step()
        score = validation_iou(config, model, val_images, val_masks, device)
        seconds = time.perf_counter() - started
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "loss": total / count, "val_iou": score, "seconds": seconds})
        improved = score > state["best_score"]
        if improved:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            save_checkpoint(
                out_dir / "best.pt", model=model.state_dict(), model_config=config.model, name=config.name,
                target=config.target, epoch=epoch + 1, val_iou=score, train_config=config.to_dict(),
                data_sha256=data_sha256,
            )
        save_checkpoint(
            latest, model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            model_config=config.model, name=config.name, target=config.target, train_config=config.to_dict(),
            data_sha256=data_sha256, **state,
        )
        mean_epoch = np.mean([h["seconds"] for h in state["history"]])
        eta = mean_epoch * (config.epochs - state["epoch"])
        log(
            f"[{config.name}] epoch {epoch + 1}/{config.epochs}  loss {total / count:.4f}  "
            f"val IoU {score:.4f}{' *' if improved else '  '}  {seconds:.1f}s  ETA {_format_seconds(eta)}"
        )

    metrics = {
        "name": config.name,
        "target": config.target,
        "class_name": CLASS_NAMES[config.target] if config.is_member else None,
        "finished": True,
        "best_epoch": state["best_epoch"],
        "best_val_iou": state["best_score"],
        "epochs_run": state["epoch"],
        "stopped_early": state["epoch"] < config.epochs,
        "parameters": params,
        "seconds": float(sum(h["seconds"] for h in state["history"])),
        "history": state["history"],
        "val_tiles": int(len(val_images)),
        "config": config.to_dict(),
    }
    write_json_atomic(metrics_path, metrics)
    return metrics
