"""Train one network — a one-vs-rest member or the multiclass baseline — with resume and early stopping.

A network's folder holds ``latest.pt`` (written every epoch, with optimiser and
scheduler state), ``best.pt`` (the best validation epoch) and, once finished,
``metrics.json``. Each epoch draws its tile order and augmentation from a seed
derived from (seed, network, epoch), so a run resumed from ``latest.pt`` ends with
the same weights as one that was never interrupted.

Networks train in channels-last memory layout (:data:`MEMORY_FORMAT`), which oneDNN's CPU
convolutions run faster; checkpoints are saved in the standard contiguous layout either way.
"""
import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ensemble.core.augment import RECIPE as AUGMENT_RECIPE
from ensemble.core.augment import AugmentConfig, build_augmentation
from ensemble.core.classes import CLASS_NAMES, NO_LABEL, NUM_CLASSES, TERRAIN_CLASSES, pixel_counts
from ensemble.core.devices import machine_cores
from ensemble.core.errors import RunError
from ensemble.core.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from ensemble.core.history import TrainingLock, write_history
from ensemble.core.logs import line_logger
from ensemble.core.metrics import binary_iou, confusion_matrix, iou_per_class, mean_iou
from ensemble.core.objectives import DEFAULT_OBJECTIVE, HEADLINE_CONVENTION, mask_background, predicts_background
from ensemble.core.progress import Progress
from ensemble.core.runfolder import BEST, LATEST, METRICS, RunFolder, snapshot_file
from ensemble.core.split import tiles_per_epoch
from ensemble.core.weights import class_weights

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import DistillLoss, DistillTarget, MemberLoss, MulticlassLoss, auto_pos_weight
from .unet import UNet, UNetConfig, count_parameters

_log_line = line_logger(__name__)  # where progress lines go when the caller gives no log

#: Memory layout of the networks and batches during training (``torch.contiguous_format`` for NCHW).
MEMORY_FORMAT = torch.channels_last


#: Learning-rate schedules. ``cosine``: stepped every optimiser step, a linear warm-up over
#: ``warmup_epochs`` then a cosine down to ``lr * min_lr_ratio`` at the last step. ``cosine_epoch``:
#: cosine annealing stepped once per epoch, from ``lr`` to ``lr * min_lr_ratio`` at the last epoch.
SCHEDULES = ("cosine_epoch", "cosine")


#: A distilled network's ``distill`` settings, with their defaults: the teacher (a served strategy of the run,
#: required), the weight of the label loss (the teacher's KL term gets ``1 - alpha``), the softmax temperature,
#: and the images it learns from through the teacher alone (``{"source", "scale", "sha256", "tiles"}``, or None).
DISTILL_DEFAULTS = {"teacher": None, "alpha": 0.5, "temperature": 2.0, "unlabeled": None}
DISTILL_KEYS = tuple(DISTILL_DEFAULTS)
#: A network started from trained weights records where they came from: the source run folder (absolute) and the
#: sha256 of that run's ``best.pt`` of the network with the same name, checked again when the weights are loaded.
INIT_FROM_KEYS = ("run", "sha256")
#: Config keys recorded only when set (:meth:`TrainConfig.to_dict`).
OPTIONAL_KEYS = ("distill", "init_from")


@dataclass
class TrainConfig:
    """How to train one network. ``target`` is the member's class id, or ``None`` for the baseline.

    The defaults are the searched recipe both presets train (:mod:`members.presets`): AdamW, a warm-up
    then a cosine to zero stepped every batch, no early stopping, flips and degradations
    (:data:`ensemble.core.augment.RECIPE`). A run's ``config.json``
    records every field; a key an older file lacks is read from the table kept beside the format
    version (``ensemble.TRAIN_CONFIG_V1_DEFAULTS``), never from these defaults.
    """

    name: str
    target: int = None
    model: dict = field(default_factory=dict)
    epochs: int = 16
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 0  # 0: no early stopping (best.pt is still the best validation epoch)
    samples_per_epoch: int = 0  # 0: every training tile once per epoch
    val_tiles: int = 0  # 0: the whole validation split every epoch
    sampler_weight: float = 1.0  # weight of tiles holding the target class (big rock for the baseline)
    loss: str = "bce_dice"
    pos_weight: float = None  # None: from the class's pixel share
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    objective: str = DEFAULT_OBJECTIVE  # competition: unlabeled pixels ignored, class 0 never predicted
    augment: dict = field(default_factory=lambda: AUGMENT_RECIPE.to_dict())
    distill: dict = field(default_factory=dict)  # a multiclass student's teacher: see DISTILL_KEYS; {}: labels only
    init_from: dict = field(default_factory=dict)  # starting weights: see INIT_FROM_KEYS; {}: a fresh initialisation
    schedule: str = "cosine"  # see SCHEDULES
    warmup_epochs: float = 0.25  # "cosine": linear warm-up over this many epochs (fractions allowed)
    min_lr_ratio: float = 0.0  # the schedule ends at lr * min_lr_ratio
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    snapshot_fractions: list = field(default_factory=list)  # budget-curve points: shares of the epochs
    replica: int = 0  # control networks: which of the multiclass nets (seeds apart)
    seed: int = 0
    seed_from_name: bool = False  # True: the network seed is drawn from (seed, name); see network_seed

    def to_dict(self):
        """Plain dict for JSON and checkpoints. ``distill`` and ``init_from`` are left out when empty: they are
        recorded only for a distilled network and one started from trained weights, so every other network's
        config (and its digest) reads as it did before either existed."""
        values = asdict(self)
        for key in OPTIONAL_KEYS:
            if not values[key]:
                del values[key]
        return values

    @property
    def is_member(self):
        """True for a one-vs-rest member, False for the multiclass baseline."""
        return self.target is not None

    @property
    def ignores_unlabeled(self):
        """True when unlabeled pixels are left out of this network's loss and score.

        Under the ``competition`` objective every network but the background member ignores them.
        """
        return not predicts_background(self.objective) and self.target != 0

    def check(self):
        """``ValueError`` naming the first setting out of its range (schedule, rates, sizes)."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        ranges = {"ema_decay": (0.0, 1.0), "min_lr_ratio": (0.0, 1.0), "model.dropout": (0.0, 1.0)}
        values = {"ema_decay": self.ema_decay, "min_lr_ratio": self.min_lr_ratio,
                  "model.dropout": self.model.get("dropout", 0.0)}
        for key, (low, high) in ranges.items():
            if not low <= values[key] < high and not (key == "min_lr_ratio" and values[key] == 1.0):
                raise ValueError(f"{key}: {values[key]} is outside [{low}, {high})")
        if any(not 0 < f <= 1 for f in self.snapshot_fractions):
            raise ValueError(f"snapshot_fractions: each must be in (0, 1], got {self.snapshot_fractions}")
        self._check_distill()
        if self.init_from and sorted(self.init_from) != sorted(INIT_FROM_KEYS):
            raise ValueError(f"init_from: expected the keys {', '.join(INIT_FROM_KEYS)}, got "
                             f"{', '.join(sorted(self.init_from)) or 'none'}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")
        for key in ("lr", "warmup_epochs", "weight_decay", "patience", "samples_per_epoch", "val_tiles",
                    "sampler_weight", "dice_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must not be negative, got {getattr(self, key)}")
        return self

    def _check_distill(self):
        if not self.distill:
            return
        unknown = sorted(set(self.distill) - set(DISTILL_KEYS))
        if unknown:
            raise ValueError(f"distill.{unknown[0]}: unknown; valid: {', '.join(DISTILL_KEYS)}")
        if self.is_member:
            raise ValueError("distill: only a multiclass network learns from a teacher, not a one-vs-rest member")
        if not self.distill.get("teacher"):
            raise ValueError("distill.teacher: the strategy whose logits the student learns from is required")
        alpha, temperature = self.distill_settings()[1:]
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha: must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"distill.temperature: must be positive, got {temperature}")

    def distill_settings(self):
        """``(teacher, alpha, temperature)`` of a distilled network (:data:`DISTILL_KEYS`' defaults filled in),
        ``(None, 1.0, 1.0)`` for one trained on labels alone."""
        if not self.distill:
            return None, 1.0, 1.0
        values = {**DISTILL_DEFAULTS, **self.distill}
        return values["teacher"], float(values["alpha"]), float(values["temperature"])

    def steps_per_epoch(self, train_tiles):
        """Optimiser steps in one epoch when ``train_tiles`` tiles are available for training."""
        return math.ceil(tiles_per_epoch(self.samples_per_epoch, train_tiles) / self.batch_size)

    def snapshot_epochs(self):
        """Epochs after which ``best.pt`` is copied for the budget curve: each fraction of ``epochs``, rounded, >= 1."""
        return sorted({min(self.epochs, max(1, round(f * self.epochs))) for f in self.snapshot_fractions})

    def network_seed(self):
        """Seed of this network: the run seed combined with its identity.

        Members and the baseline: ``seed * 1009`` plus the class id (the baseline: 5). Networks with
        ``seed_from_name`` (the baseline's replicas and the control's nets) hash the run seed and their
        name, so no two networks of a run share a seed. Configs recorded without ``seed_from_name``
        keep the class-and-replica formula they were trained with.
        """
        if self.seed_from_name:
            digest = hashlib.sha256(f"{self.seed}:{self.name}".encode()).digest()
            return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
        index = self.target if self.is_member else NUM_CLASSES
        return self.seed * 1009 + index + 101 * self.replica


def init_source(run, name):
    """``best.pt`` of network ``name`` in the run folder ``run``: where a network started from trained weights
    takes them."""
    return RunFolder(run).best_path(name)


def initial_weights(config):
    """The state dict a network with ``init_from`` starts from: its namesake's ``best.pt`` in the source run,
    refused (:class:`~ensemble.core.errors.RunError`) unless it still has the sha256 recorded when it was planned.
    Only the weights are taken; optimiser, schedule and epochs are the new network's own."""
    path = init_source(config.init_from["run"], config.name)
    if not path.is_file():
        raise RunError(f"{path}: not found; {config.name} was planned to start from it (init_from)")
    if sha256_file(path) != config.init_from["sha256"]:
        raise RunError(f"{path}: sha256 differs from the one recorded in init_from when {config.name} was planned; "
                       "the source run changed (use a new --run)")
    return load_checkpoint(path)["model"]


def build_loss(config, train_masks):
    """The loss of ``config`` with weights from the pixel shares of ``train_masks``.

    Pixel shares are taken over the pixels the network learns from: labeled ones when
    :attr:`TrainConfig.ignores_unlabeled`, else all.
    """
    counts = pixel_counts(train_masks).astype(np.float64)
    if config.ignores_unlabeled:
        counts[0] = 0
    shares = counts / max(counts.sum(), 1)
    if config.is_member:
        pos_weight = config.pos_weight if config.pos_weight is not None else auto_pos_weight(shares[config.target])
        return MemberLoss(config.loss, pos_weight, config.dice_weight, config.focal_gamma)
    ignore = (0,) if config.ignores_unlabeled else ()
    labels_loss = MulticlassLoss(config.loss, class_weights(counts, ignore), config.focal_gamma,
                                 terrain_only=config.ignores_unlabeled)
    teacher, alpha, temperature = config.distill_settings()
    if teacher is None:
        return labels_loss
    return DistillLoss(labels_loss, alpha, temperature, terrain_only=not predicts_background(config.objective))


def targets_and_valid(config, masks):
    """Training target and valid-pixel mask (None: all) for a batch of masks (N, H, W) int64.

    Pixels marked :data:`~ensemble.core.classes.NO_LABEL` (a student's tiles without labels) are never valid.
    """
    valid = masks > 0 if config.ignores_unlabeled else None
    missing = masks == NO_LABEL
    if missing.any():
        valid = ~missing if valid is None else valid & ~missing
        masks = masks.masked_fill(missing, 0)
    if config.is_member:
        return (masks == config.target).long(), valid
    return masks, valid


def epoch_order(config, train_masks, epoch):
    """Tile positions (into the training arrays) for one epoch, seeded by (seed, network, epoch)."""
    rng = np.random.default_rng([config.network_seed(), epoch])
    n = len(train_masks)
    size = tiles_per_epoch(config.samples_per_epoch, n)
    if config.sampler_weight == 1.0:
        order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(size / n))])
        return order[:size]
    rare = TERRAIN_CLASSES[-1] if not config.is_member else config.target
    has = (train_masks == rare).any(axis=(1, 2))
    weights = np.where(has, config.sampler_weight, 1.0)
    return rng.choice(n, size=size, replace=True, p=weights / weights.sum())


def make_batch(images, masks, positions, augment, generator=None, device="cpu"):
    """The tiles at ``positions``, augmented as one batch: images (B, 1, H, W) float32, masks (B, H, W) int64.

    ``augment`` (a :class:`~ensemble.core.augment.BatchAugmentation`, or ``None``) draws every
    tile's parameters from ``generator`` and runs on ``device``, where the batch is returned.
    """
    x, y = _tiles(images, masks, positions, device)
    if augment is not None:
        x, y = augment(x, y, generator)
    return x, y


def make_distill_batch(images, masks, teacher_logits, positions, augment, *, generator=None, device="cpu"):
    """:func:`make_batch` with the teacher's class logits of the same tiles (``teacher_logits`` (N, 5, H, W), any
    float dtype, indexed like ``images``): ``(images, masks, teacher_logits, coverage)``. The teacher's maps get the
    tiles' flips and warps but not their photometric changes or degradations: the student learns the teacher's
    answer for the clean tile from the augmented one. The random draws are :func:`make_batch`'s."""
    x, y = _tiles(images, masks, positions, device)
    maps = torch.from_numpy(np.asarray(teacher_logits[np.asarray(positions)], dtype=np.float32)).to(device)
    if augment is None:
        return x, y, maps, torch.ones_like(maps[:, 0])
    x, y, (maps, coverage) = augment.with_maps(x, y, maps, generator)
    return x, y, maps, coverage


def _tiles(images, masks, positions, device):
    positions = np.asarray(positions)
    x = torch.from_numpy(images[positions])[:, None].to(device)
    y = torch.from_numpy(masks[positions].astype(np.int64)).to(device)
    return x, y


@torch.inference_mode()
def validation_logits(model, images, device, batch_size=128):
    """Logits of ``model`` for float images (N, H, W) in eval mode, as a float32 CPU tensor."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size])[:, None].to(device)
        out.append(model(x.contiguous(memory_format=MEMORY_FORMAT)).float().contiguous().cpu())
    return torch.cat(out)


def validation_score(config, logits, masks):
    """The early-stopping score from validation ``logits``, in the metric of the run's objective.

    A member: the binary IoU of its class (logit > 0) on the pixels it learns from
    (labeled ones for terrain members under ``competition``). The baseline: the mean IoU
    of its masks in the objective's headline convention (``competition``: class 0 is never
    predicted, the argmax runs over classes 1-4).
    """
    truth = masks.astype(np.int64)
    if config.is_member:
        valid = truth > 0 if config.ignores_unlabeled else None
        return binary_iou(truth == config.target, logits[:, 0].numpy() > 0, valid)
    class_logits = logits if predicts_background(config.objective) else mask_background(logits)
    return mean_iou(confusion_matrix(truth, class_logits.argmax(1).numpy()), HEADLINE_CONVENTION[config.objective])


def validation_ious(config, logits, masks):
    """``{class name: IoU}`` of the classes a network is scored on, from validation ``logits``: a member's class
    (its :func:`validation_score`), or every class of a multiclass network's masks in the objective's convention
    (classes without a union left out)."""
    truth = masks.astype(np.int64)
    if config.is_member:
        return {CLASS_NAMES[config.target]: validation_score(config, logits, masks)}
    class_logits = logits if predicts_background(config.objective) else mask_background(logits)
    ious = iou_per_class(confusion_matrix(truth, class_logits.argmax(1).numpy()), HEADLINE_CONVENTION[config.objective])
    return {name: float(value) for name, value in zip(CLASS_NAMES, ious) if np.isfinite(value)}


@torch.inference_mode()
def validation_loss(config, loss_fn, logits, masks, *, device="cpu", batch_size=128):
    """The network's loss on its validation tiles, batch by batch like training (a student's label term only: its
    teacher has no maps of the validation tiles)."""
    loss_fn = getattr(loss_fn, "labels_loss", loss_fn)
    total = 0.0
    for start in range(0, len(logits), batch_size):
        masks_batch = torch.from_numpy(masks[start : start + batch_size].astype(np.int64)).to(device)
        target, valid = targets_and_valid(config, masks_batch)
        batch = logits[start : start + batch_size].to(device)
        total += float(loss_fn(batch, target, valid)) * len(batch)
    return total / max(len(logits), 1)


def format_seconds(seconds):
    """``1h02m`` or ``3m07s``."""
    seconds = int(round(seconds))
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")


#: The arrays of a :class:`SplitArrays`, in its field order.
SPLIT_KEYS = ("train_images", "train_masks", "val_images", "val_masks")


@dataclass
class SplitArrays:
    """The training and validation tiles of one network: images float32 (N, H, W), masks uint8."""

    train_images: np.ndarray
    train_masks: np.ndarray
    val_images: np.ndarray
    val_masks: np.ndarray
    train_teacher_logits: np.ndarray = None  # a distilled network's teacher logits of the training tiles

    @classmethod
    def select(cls, images, masks, train_idx, val_idx):
        """Index the whole file's arrays by the split (copies, made once per process)."""
        return cls(images[train_idx], masks[train_idx], images[val_idx], masks[val_idx])

    def save(self, folder):
        """Write the four arrays as ``.npy`` files into ``folder``, for :meth:`open` in other processes."""
        folder = Path(folder)
        for key in SPLIT_KEYS:
            np.save(folder / f"{key}.npy", getattr(self, key))
        return folder

    @classmethod
    def open(cls, folder):
        """The arrays :meth:`save` wrote, memory-mapped copy-on-write: processes on one machine share one copy
        of the tiles, read without a copy, and a write stays private."""
        return cls(**{key: np.load(Path(folder) / f"{key}.npy", mmap_mode="c") for key in SPLIT_KEYS})

    def validation_subset(self, config):
        """Validation positions ``config`` scores on every epoch: all, or ``val_tiles`` drawn with its seed."""
        n = len(self.val_images)
        if config.val_tiles and config.val_tiles < n:
            return np.sort(np.random.default_rng(config.seed).choice(n, config.val_tiles, replace=False))
        return np.arange(n)


def finished_metrics(out_dir):
    """The metrics of a network already finished in ``out_dir`` (marked ``skipped``), else ``None``."""
    metrics_path = Path(out_dir) / METRICS
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("finished"):
            metrics["skipped"] = True
            return metrics
    return None


def match_parameter_layout(optimizer):
    """Give the optimiser's per-parameter state tensors their parameter's memory layout (in place).

    Checkpoints store them contiguous; after loading, the moments of a channels-last weight
    are channels-last again, exactly as in a run that was never interrupted.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def build_scheduler(optimizer, config, steps_per_epoch):
    """The learning-rate scheduler of ``config.schedule`` (:data:`SCHEDULES`) for ``optimizer``."""
    if config.schedule == "cosine_epoch":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs,
                                                          eta_min=config.lr * config.min_lr_ratio)
    if config.schedule != "cosine":
        raise ValueError(f"unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}")
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    floor = config.min_lr_ratio

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (``ema_decay``).

    After update ``t`` the average moves towards the model by ``1 - d`` with
    ``d = min(decay, (1 + t) / (10 + t))``, so early updates are not dominated by the random
    initial weights. ``module`` is an eval-mode copy of the model holding the average.
    """

    def __init__(self, model, decay):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        """Move the average one step towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1 - d)
            else:
                average.copy_(current)

    def state_dict(self):
        """Weights and update count, for ``latest.pt``."""
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


class NetworkTrainer:
    """The training state of one network: model, loss, optimiser, scheduler, history and checkpoints.

    Built fresh, or resumed from ``out_dir/latest.pt``. The epoch loop lives outside
    (:func:`train_network` for one plain U-Net, :func:`members.stacked_training.train_stacked`
    for several members as one grouped network), so each network keeps its own loss,
    sampler, learning rate and early stopping however it is executed.
    """

    def __init__(self, config, split, out_dir, *, device="cpu", log=None, data_sha256=None, on_epoch=None):
        self.config = config
        self.on_epoch = on_epoch
        self.out_dir = Path(out_dir)
        self.lock = TrainingLock(self.out_dir)  # held while this process trains the network
        self.split = split
        self.device = torch.device(device)
        self.log = log or (lambda line: None)
        self.data_sha256 = data_sha256
        if config.distill and (split.train_teacher_logits is None
                               or len(split.train_teacher_logits) != len(split.train_images)):
            raise ValueError(f"{config.name}: distilled from {config.distill_settings()[0]!r} but given no teacher "
                             f"logits for its {len(split.train_images)} training tiles")
        self.val_positions = split.validation_subset(config)
        every = len(self.val_positions) == len(split.val_images)  # no copy when all tiles are scored
        self.val_images = split.val_images if every else split.val_images[self.val_positions]
        self.val_masks = split.val_masks if every else split.val_masks[self.val_positions]
        self.memory_format = MEMORY_FORMAT
        torch.manual_seed(config.network_seed())
        self.model = UNet(UNetConfig.from_dict(config.model)).to(self.device, memory_format=self.memory_format)
        latest = self.out_dir / LATEST
        if config.init_from and not latest.exists():  # a resumed network continues from its own weights
            self.model.load_state_dict(initial_weights(config))
            self.log(f"[{config.name}] starting from {config.init_from['run']}")
        self.loss_fn = build_loss(config, split.train_masks).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config, config.steps_per_epoch(len(split.train_images)))
        self.step_schedule = config.schedule != "cosine_epoch"  # stepped every optimiser step, else every epoch
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.augment = build_augmentation(AugmentConfig(**config.augment)) if config.augment else None
        self.state = {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "history": []}
        if latest.exists():
            ckpt = load_checkpoint(latest, map_location=self.device)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            match_parameter_layout(self.optimizer)
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.average is not None:
                self.average.load_state_dict(ckpt["ema"])
            self.state = {k: ckpt[k] for k in self.state}
            self.log(f"[{config.name}] resuming from {latest} after epoch {self.state['epoch']}")
        write_history(self.out_dir, self.state["history"])  # the header alone says the network has started

    @property
    def eval_model(self):
        """The weights that are validated and kept as ``best.pt``: the moving average when ``ema_decay`` is on."""
        return self.average.module if self.average is not None else self.model

    @property
    def epoch(self):
        """Epochs completed so far."""
        return self.state["epoch"]

    def active(self):
        """True while epochs remain and early stopping has not triggered.

        Early stopping triggers after ``patience`` epochs in a row without improvement: with
        patience 4 and the best score at epoch 5, epochs 6-9 are trained and 9 is the last.
        The first epoch always runs; patience 0 never stops early.
        """
        if self.epoch >= self.config.epochs:
            return False
        if not self.config.patience:
            return True
        without_improvement = self.epoch - max(self.state["best_epoch"], 0)  # best_epoch is -1 before any
        return self.epoch == 0 or without_improvement < self.config.patience

    def epoch_batches(self):
        """Yield ``(images, target, valid)`` batches of the next epoch, on the device.

        Tile order and augmentation are drawn from this network's own random stream,
        seeded by (seed, network, epoch) and kept apart from the global one, so the
        batches are the same whether the network trains alone, resumed, or stacked with others.
        """
        epoch = self.epoch
        seed = self.config.network_seed() * 7919 + epoch
        torch.manual_seed(seed)  # dropout draws from the global stream
        generator = torch.Generator().manual_seed(seed)  # augmentation: this network's own stream
        order = epoch_order(self.config, self.split.train_masks, epoch)
        teacher = self.split.train_teacher_logits if self.config.distill else None
        for start in range(0, len(order), self.config.batch_size):
            positions = order[start : start + self.config.batch_size]
            if teacher is None:
                x, y = make_batch(self.split.train_images, self.split.train_masks, positions, self.augment,
                                  generator, self.device)
                target, valid = targets_and_valid(self.config, y)
            else:
                x, y, maps, coverage = make_distill_batch(self.split.train_images, self.split.train_masks, teacher,
                                                          positions, self.augment, generator=generator,
                                                          device=self.device)
                labels, valid = targets_and_valid(self.config, y)
                target = DistillTarget(labels, maps, coverage)
            yield x.contiguous(memory_format=self.memory_format), target, valid

    def step(self):
        """One optimiser step on the gradients already accumulated, then clear them.

        A per-step schedule and the weight average move along with it.
        """
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_schedule:
            self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)

    def end_epoch(self, val_logits, mean_loss, seconds, val_seconds=0.0):
        """Score ``val_logits``, step the schedule, save best/latest checkpoints and log one line.

        ``seconds`` is the whole epoch, of which ``val_seconds`` went to the validation forward pass
        (recorded in the history, shown as a share in the log line).
        """
        config = self.config
        if not self.step_schedule:
            self.scheduler.step()
        score = validation_score(config, val_logits, self.val_masks)
        epoch = self.epoch + 1
        self.state["epoch"] = epoch
        tiles = tiles_per_epoch(config.samples_per_epoch, len(self.split.train_images))
        row = {"epoch": epoch, "step": epoch * config.steps_per_epoch(len(self.split.train_images)),
               "lr": self.optimizer.param_groups[0]["lr"], "loss": mean_loss,
               "val_loss": validation_loss(config, self.loss_fn, val_logits, self.val_masks, device=self.device),
               "val_iou": score, "iou": validation_ious(config, val_logits, self.val_masks),
               "seconds": seconds, "val_seconds": val_seconds,
               "tiles_per_s": tiles / max(seconds - val_seconds, 1e-9),
               "threads": torch.get_num_threads(), "cores": machine_cores()}
        self.state["history"].append(row)
        improved = score > self.state["best_score"]
        common = dict(model_config=config.model, name=config.name, target=config.target,
                      train_config=config.to_dict(), data_sha256=self.data_sha256)
        if improved:
            self.state["best_score"], self.state["best_epoch"] = score, epoch
            save_checkpoint(self.out_dir / BEST, model=self.eval_model.state_dict(), epoch=epoch, val_iou=score,
                            **common)
        if epoch in config.snapshot_epochs():  # before latest.pt: a resumed run never misses one
            write_bytes_atomic(snapshot_file(self.out_dir, epoch), (self.out_dir / BEST).read_bytes())
        resume = {"ema": self.average.state_dict()} if self.average is not None else {}
        save_checkpoint(self.out_dir / LATEST, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), **resume, **common, **self.state)
        mean_epoch = np.mean([h["seconds"] for h in self.state["history"]])
        eta = mean_epoch * (config.epochs - epoch)
        self.log(
            f"[{config.name}] epoch {epoch}/{config.epochs}  loss {mean_loss:.4f}  "
            f"val IoU {score:.4f}{' *' if improved else '  '}  {seconds:.1f}s "
            f"(validation {val_seconds / seconds:.0%})  "
            f"ETA {format_seconds(eta)}"
        )
        write_history(self.out_dir, self.state["history"])
        if self.on_epoch is not None:
            self.on_epoch(self.out_dir, row)

    def finish(self, **extra):
        """Write ``metrics.json`` (finished), release the training lock and return the metrics dict."""
        state, config = self.state, self.config
        metrics = {
            "name": config.name,
            "target": config.target,
            "class_name": CLASS_NAMES[config.target] if config.is_member else None,
            "finished": True,
            "best_epoch": state["best_epoch"],
            "best_val_iou": state["best_score"],
            "epochs_run": state["epoch"],
            "stopped_early": state["epoch"] < config.epochs,
            "parameters": count_parameters(self.model),
            "seconds": float(sum(h["seconds"] for h in state["history"])),
            "history": state["history"],
            "val_tiles": int(len(self.val_positions)),
            "config": config.to_dict(),
            **extra,
        }
        write_json_atomic(self.out_dir / METRICS, metrics)
        self.lock.release()
        return metrics


def train_network(config, split, out_dir, *, device="cpu", log=_log_line, data_sha256=None, on_epoch=None):
    """Train (or resume, or skip if finished) one network into ``out_dir``; return its metrics dict.

    ``split`` is a :class:`SplitArrays` (its training and validation tiles). ``log`` receives
    one line per epoch (pass ``None`` for silence). ``data_sha256`` is stored in the
    checkpoints so networks from different data files are never mixed. ``on_epoch(out_dir, row)`` is called after
    every epoch, once its checkpoints and ``history.csv`` are written (the run's progress figure, TensorBoard).
    """
    done = finished_metrics(out_dir)
    if done:
        return done
    trainer = NetworkTrainer(config, split, out_dir, device=device, log=log, data_sha256=data_sha256,
                             on_epoch=on_epoch)
    while trainer.active():
        started = time.perf_counter()
        trainer.model.train()
        total, count = 0.0, 0
        bar = Progress(config.steps_per_epoch(len(split.train_images)), log, unit="batches", every=None,
                       desc=f"[{config.name}] epoch {trainer.epoch + 1}/{config.epochs}")
        for step, (x, target, valid) in enumerate(trainer.epoch_batches(), 1):
            loss = trainer.loss_fn(trainer.model(x), target, valid)
            loss.backward()
            trainer.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.update(step, loss=total / count, **{"tiles/s": count / (time.perf_counter() - started)})
        bar.close()
        val_started = time.perf_counter()
        val_logits = validation_logits(trainer.eval_model, trainer.val_images, trainer.device)
        ended = time.perf_counter()
        trainer.end_epoch(val_logits, total / count, ended - started, ended - val_started)
    return trainer.finish()
