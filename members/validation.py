"""A network's validation: its logits of the validation tiles, the early-stopping score, per-class IoU and loss."""
import numpy as np
import torch

from ensemble.core.classes import CLASS_NAMES
from ensemble.core.metrics import binary_iou, confusion_matrix, iou_per_class, mean_iou
from ensemble.core.objectives import HEADLINE_CONVENTION, mask_background, predicts_background

from .batches import targets_and_valid

#: Memory layout of the networks and batches during training (``torch.contiguous_format`` for NCHW).
MEMORY_FORMAT = torch.channels_last


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
