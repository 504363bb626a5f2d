"""Out-of-fold fused logits: score a fusion strategy on tiles its fuser never saw.

The fusers in ``RUN/fusion`` are fitted on the whole validation split, the only tiles the
members never trained on, so scoring them on those tiles is in-sample. Cross-fitting
removes that bias: the validation tiles are split into folds by rover stop (tiles of one
stop are near-duplicates and must not be on both sides), a fresh copy of the fuser is
fitted on all folds but one, and it predicts the held-out fold.
"""
import numpy as np
import torch

from ..core.classes import NUM_CLASSES


def fold_assignment(groups, folds, seed=0):
    """Fold number (0..folds-1) of every tile: whole groups shuffled with ``seed``, dealt round-robin.

    ``ValueError`` if there are fewer groups than ``folds``.
    """
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < folds:
        raise ValueError(f"cross-fitting needs at least {folds} validation groups, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[np.searchsorted(unique, groups)]


def fold_fusers(fuser, inputs, masks, fold_of_tile, tile_ids=None):
    """``{fold: a fresh copy of fuser fitted on every tile outside that fold}``.

    ``fuser`` supplies the strategy and settings (``get_params``); it is not refitted itself. ``inputs`` is
    the fuser's input (N, 5 per source, H, W).
    """
    ids = np.asarray(tile_ids) if tile_ids is not None else None
    fitted = {}
    for fold in np.unique(fold_of_tile):
        held_out = fold_of_tile == fold
        clone = type(fuser)(**fuser.get_params())
        clone.fit(np.asarray(inputs[~held_out]), masks[~held_out], tile_ids=None if ids is None else ids[~held_out])
        fitted[int(fold)] = clone
    return fitted


def apply_fold_fusers(fitted, inputs, fold_of_tile):
    """Fused class logits (N, 5, h, w) float32 of ``inputs`` (N, 5 per source, h, w): each tile (or frame) by the
    copy of :func:`fold_fusers` that never saw its fold."""
    out = np.empty((len(inputs), NUM_CLASSES, *inputs.shape[2:]), dtype=np.float32)
    for fold, clone in fitted.items():
        chosen = fold_of_tile == fold
        if chosen.any():
            out[chosen] = clone.predict_logits(torch.from_numpy(np.asarray(inputs[chosen]))).numpy()
    return out


def cross_fitted_logits(fuser, member_logits, masks, fold_of_tile, tile_ids=None, extra=None):
    """Fused class logits (N, 5, H, W) float32 where each tile comes from a fuser fitted without its fold.

    ``member_logits`` is the fuser's input (N, 5 per source, H, W); ``fuser`` supplies the strategy and
    settings (:func:`fold_fusers`). ``extra`` (``(inputs (M, 5 per source, h, w), fold of each)``, e.g. whole
    frames made of these tiles) is fused by the same fold's copy too; then ``(fused_logits, extra fused
    logits)`` is returned.
    """
    fitted = fold_fusers(fuser, member_logits, masks, fold_of_tile, tile_ids)
    fused_logits = apply_fold_fusers(fitted, member_logits, fold_of_tile)
    if extra is None:
        return fused_logits
    extra_inputs, extra_folds = extra
    return fused_logits, apply_fold_fusers(fitted, extra_inputs, extra_folds)


def fitted_logits(fuser, logits, masks, folds, tile_ids):
    """Fused logits of a fresh ``fuser`` on ``logits``: cross-fitted over ``folds``, or in-sample when ``folds`` is
    None."""
    if folds is None:  # in-sample, like the evaluation with --cross-fit 0
        return fuser.fit(logits, masks, tile_ids=[str(i) for i in tile_ids]).predict_logits(
            torch.from_numpy(np.asarray(logits))).numpy()
    return cross_fitted_logits(fuser, logits, masks, folds, tile_ids)
