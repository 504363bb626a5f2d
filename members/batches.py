"""The batches a network trains on: its loss, its targets, the epoch's tile order, augmented batches (with a
teacher's maps for a student), and the split's arrays shared by the networks of one plan."""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ensemble.core.classes import NO_LABEL, TERRAIN_CLASSES, pixel_counts
from ensemble.core.objectives import predicts_background
from ensemble.core.split import tiles_per_epoch
from ensemble.core.weights import class_weights

from .losses import DistillLoss, MemberLoss, MulticlassLoss, auto_pos_weight


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
