"""Losses: one-vs-rest member losses (BCE or focal, plus soft Dice), the multiclass baseline loss, and the
distillation loss of a multiclass student learning from a teacher's logits as well as the labels.

Every loss takes logits, never probabilities, and an optional ``valid`` pixel mask
(False = ignored, e.g. unlabeled pixels under the ``competition`` objective).
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MEMBER_LOSSES = ("bce_dice", "focal_dice")
MULTICLASS_LOSSES = ("ce", "focal")


def auto_pos_weight(share, cap=20.0):
    """Positive weight for a class covering ``share`` of the pixels: sqrt(neg/pos), capped."""
    share = min(max(share, 1e-6), 1 - 1e-6)
    return float(min(math.sqrt((1 - share) / share), cap))


def soft_dice_loss(member_logits, target, valid, eps=1.0):
    """1 - soft Dice of sigmoid(logits) against a binary target, over valid pixels, per batch."""
    member_probs = torch.sigmoid(member_logits) * valid
    target = target * valid
    inter = (member_probs * target).sum()
    return 1 - (2 * inter + eps) / (member_probs.sum() + target.sum() + eps)


class MemberLoss(nn.Module):
    """BCE-with-logits (or binary focal) with a positive weight, plus ``dice_weight`` x soft Dice."""

    def __init__(self, kind="bce_dice", pos_weight=1.0, dice_weight=1.0, gamma=2.0):
        super().__init__()
        if kind not in MEMBER_LOSSES:
            raise ValueError(f"unknown member loss {kind!r}; valid: {', '.join(MEMBER_LOSSES)}")
        self.kind, self.dice_weight, self.gamma = kind, dice_weight, gamma
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, member_logits, target, valid=None):
        """``member_logits`` (N, 1, H, W); ``target`` (N, H, W) in {0, 1}; ``valid`` (N, H, W) bool or None."""
        member_logits = member_logits[:, 0]
        target = target.float()
        valid = torch.ones_like(target) if valid is None else valid.float()
        pixel = F.binary_cross_entropy_with_logits(
            member_logits, target, pos_weight=self.pos_weight, reduction="none"
        )
        if self.kind == "focal_dice":
            p_true = torch.where(target > 0, torch.sigmoid(member_logits), torch.sigmoid(-member_logits))
            pixel = pixel * (1 - p_true).pow(self.gamma)
        loss = (pixel * valid).sum() / valid.sum().clamp_min(1)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(member_logits, target, valid)
        return loss


class MulticlassLoss(nn.Module):
    """Class-weighted cross-entropy (or focal) over 5 classes; ``valid`` False pixels are ignored.

    ``terrain_only=True`` (the ``competition`` objective) drops class 0 altogether: the
    softmax runs over the logits of classes 1-4 and only pixels labeled 1-4 count, so the
    network learns exactly the choice it is scored on (class 0 is never predicted).
    """

    def __init__(self, kind="ce", class_weights=None, gamma=2.0, terrain_only=False):
        super().__init__()
        if kind not in MULTICLASS_LOSSES:
            raise ValueError(f"unknown multiclass loss {kind!r}; valid: {', '.join(MULTICLASS_LOSSES)}")
        self.kind, self.gamma, self.terrain_only = kind, gamma, terrain_only
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights).float())

    def forward(self, class_logits, target, valid=None):
        """``class_logits`` (N, C, H, W); ``target`` (N, H, W) int64; ``valid`` (N, H, W) bool or None."""
        weight = self.class_weights
        if valid is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        if self.terrain_only:
            valid = valid & (target > 0)
            class_logits, target = class_logits[:, 1:], (target - 1).clamp_min(0)
            weight = None if weight is None else weight[1:]
        pixel = F.cross_entropy(class_logits, target, weight=weight, reduction="none")
        if self.kind == "focal":
            log_p = F.log_softmax(class_logits, dim=1).gather(1, target[:, None])[:, 0]
            pixel = pixel * (1 - log_p.exp()).pow(self.gamma)
        weights = weight[target] if weight is not None else torch.ones_like(pixel)
        weights = weights * valid
        return (pixel * valid).sum() / weights.sum().clamp_min(1e-6)


class DistillTarget(NamedTuple):
    """What a distilled network learns from, for a batch: the labels (N, H, W) int64, the teacher's class logits
    (N, 5, H, W) of the clean tiles (moved with the augmentation's flips and warps), and ``coverage`` (N, H, W):
    1 where the teacher's map covers the augmented pixel, less where a warp reached past the tile."""

    labels: torch.Tensor
    teacher_logits: torch.Tensor
    coverage: torch.Tensor


class DistillLoss(nn.Module):
    """``alpha * labels_loss + (1 - alpha) * T^2 * KL(teacher || student)`` at temperature ``T``.

    The label term is ``labels_loss`` (a :class:`MulticlassLoss`) on the pixels the objective scores. The
    teacher term is the pixel-wise Kullback-Leibler divergence between the softened class distributions,
    averaged over every pixel the teacher's map covers, labeled or not: there the labels say nothing and the
    teacher does. ``T^2`` keeps the gradient's scale across temperatures (Hinton et al., 2015).
    ``terrain_only`` (the ``competition`` objective) compares the distributions over classes 1-4, the choice
    the student is scored on (the teacher's class-0 logit is ``-inf`` there).
    """

    def __init__(self, labels_loss, alpha=0.5, temperature=1.0, terrain_only=False):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature: must be positive, got {temperature}")
        self.labels_loss, self.alpha = labels_loss, alpha
        self.temperature, self.terrain_only = temperature, terrain_only

    def teacher_term(self, class_logits, teacher_logits, coverage):
        """The mean over covered pixels of ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``."""
        if self.terrain_only:
            class_logits, teacher_logits = class_logits[:, 1:], teacher_logits[:, 1:]
        t = self.temperature
        student_log_probs = F.log_softmax(class_logits.float() / t, dim=1)
        teacher_log_probs = F.log_softmax(teacher_logits.float() / t, dim=1)
        pixel = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(1)
        return t * t * (pixel * coverage).sum() / coverage.sum().clamp_min(1e-6)

    def forward(self, class_logits, target, valid=None):
        """``class_logits`` (N, 5, H, W); ``target`` a :class:`DistillTarget`; ``valid`` the labels' valid pixels."""
        loss = (1 - self.alpha) * self.teacher_term(class_logits, target.teacher_logits, target.coverage)
        if self.alpha:
            loss = loss + self.alpha * self.labels_loss(class_logits, target.labels, valid)
        return loss
