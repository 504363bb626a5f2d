"""Whole validation frames: each image rebuilt from its ``:top`` and ``:bottom`` tile, predicted tile by tile and
as one image by sliding windows, both scored per frame (``ensemble evaluate --frames``)."""
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fusion.base import _as_tensor, channel_argmax

from ..core.errors import EnsembleError
from ..core.metrics import mean_ious, per_tile_confusion
from ..inference import MEMBERS, Predictor
from .bootstrap import paired_bootstrap


def frame_pairs(ids):
    """(F, 2) indices of the tiles that are the ``:top`` and ``:bottom`` half of one image (by ``training_ids``)."""
    index = {str(t): i for i, t in enumerate(ids)}
    pairs = [(i, index[t[: -len(":top")] + ":bottom"]) for t, i in index.items()
             if t.endswith(":top") and t[: -len(":top")] + ":bottom" in index]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


@dataclass
class Frames:
    """Whole validation frames rebuilt from their two tiles, and per model two per-frame confusion matrices each:
    the frame predicted tile by tile (its tiles' matrices summed) and as one image by sliding windows."""

    pairs: np.ndarray
    truth: np.ndarray
    step: float
    folds: np.ndarray = None
    logits: dict = field(default_factory=dict)
    cms: dict = field(default_factory=dict)

    def add(self, name, tile_cms, stitched_class_logits):
        """Score ``name``: its tile matrices summed per frame, beside those of its stitched class logits."""
        pred = channel_argmax(_as_tensor(stitched_class_logits)).to(torch.uint8).numpy()
        tiled = tile_cms[self.pairs[:, 0]] + tile_cms[self.pairs[:, 1]]
        self.cms[name] = (tiled, per_tile_confusion(self.truth, pred))


def frame_source_logits(folder, sources, frames, *, options, log=None):
    """``{source: logits (F, 5, H, W)}`` of each source over whole frames (F, H, W), stitched by sliding windows
    ``options.step`` tiles apart."""
    out = {}
    for source in sources:
        predictor = Predictor(folder.path, None if source == MEMBERS else source, options=options, log=log)
        logits = None
        for i, frame in enumerate(frames):
            stitched = predictor.stitched_source_logits(frame)[0].numpy()
            if logits is None:
                logits = np.empty((len(frames), *stitched.shape), dtype=np.float32)
            logits[i] = stitched
        out[source] = logits
        del predictor
    return out


def validation_frames(folder, data, scores, *, sources, folds, options, log):
    """The run's validation frames (:class:`Frames`) with every source's stitched logits over them."""
    pairs = frame_pairs(scores.ids)
    if len(pairs) == 0:
        raise EnsembleError(f"--frames: no validation image of {folder.path} has both its :top and :bottom tile "
                            "(training_ids), so no frame can be rebuilt")
    images = data.images[scores.val_idx]
    step = options.step
    frames = Frames(pairs=pairs, truth=np.concatenate([scores.truth[pairs[:, 0]], scores.truth[pairs[:, 1]]], axis=1),
                    step=step, folds=None if folds is None else folds[pairs[:, 0]])
    log(f"stitching {len(pairs)} validation frames ({frames.truth.shape[1]}x{frames.truth.shape[2]}, step {step:g})")
    frame_images = np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=1)
    frames.logits = frame_source_logits(folder, sources, frame_images, options=options, log=log)
    return frames


def frames_table(frames, headline, n_boot=1000, seed=0):
    """Per model the headline mIoU of the validation frames predicted tile by tile and stitched as whole images,
    and the paired-bootstrap difference stitched - tiles over frames (95 % interval)."""
    metric = functools.partial(mean_ious, convention=headline)
    rows = [{"model": name, "tiles": float(metric(tiled.sum(axis=0))), "stitched": float(metric(stitched.sum(axis=0))),
             **paired_bootstrap(tiled, stitched, metric, n_boot=n_boot, seed=seed)}
            for name, (tiled, stitched) in frames.cms.items()]
    return {"n_frames": int(len(frames.pairs)), "shape": list(frames.truth.shape[1:]), "step": frames.step,
            "headline": headline, "rows": rows}
