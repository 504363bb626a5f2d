"""Evaluate a run: every fitted fuser, each member alone and the baseline, on the same validation tiles.

The tiles are the run's grouped validation split (``manifest.json: split.val_indices``): the
members and the baseline never trained on them. The saved fusers were fitted on these same
tiles (there is no third split), so by default each strategy is scored cross-fitted
(:mod:`ensemble.crossfit`): every tile's fused prediction comes from a copy of the fuser
fitted on the other folds of validation rover stops. ``cross_fit=0`` scores the saved
fusers in-sample instead; ``meta.fusers_fitted_on`` says which. The test set has no masks.

Memory: one model's class probabilities are held at a time; each model leaves behind only
its per-tile confusion matrices, its ECE and its uint8 predicted masks.
"""
import math
from pathlib import Path

import numpy as np
import torch

from fusion.base import channel_argmax
from members.training import BASELINE

from .classes import CLASS_NAMES
from .crossfit import cross_fitted_logits, fold_assignment
from .data import MarsData, load_data, tile_ids
from .errors import EnsembleError, RunError
from .inference import (
    BATCH_SIZE,
    all_logits,
    baseline_logits_batches,
    cached_val_logits,
    check_run_data,
    load_baseline,
    load_members,
    load_run_fuser,
    member_logits_batches,
)
from .metrics import binary_iou, expected_calibration_error, per_tile_confusion
from .objectives import scored_pixels
from .predict import check_tta, fitted_strategies
from .render import confusion_png, most_different_tiles, overlay_sheet
from .report import build_table, write_report
from .runfolder import RunFolder

#: Default number of cross-fitting folds (validation rover stops dealt into folds).
CROSS_FIT_FOLDS = 5


def fusers_fitted_on(cross_fit, by_groups=True):
    """What ``meta.fusers_fitted_on`` says of how the strategies were scored."""
    if not cross_fit:
        return "validation split (same tiles: in-sample)"
    unit = "rover stops" if by_groups else "tiles (the data has no groups)"
    return f"cross-fitted: {cross_fit} folds of validation {unit}, each scored by a fuser fitted without it"


#: Tiles shown in ``differences.png``.
DIFFERENCE_TILES = 8


def _score(class_logits, truth, valid):
    """Per-tile confusion matrices, ECE of the softmax on ``valid`` pixels and uint8 masks of class logits (N, 5, H, W)."""
    class_logits = torch.as_tensor(class_logits)
    pred = channel_argmax(class_logits).to(torch.uint8).numpy()
    ece = expected_calibration_error(torch.softmax(class_logits, dim=1), truth, valid=valid)
    return per_tile_confusion(truth, pred), ece, pred


def _difference_strategy(table, strategies):
    """``learned`` if fitted, else the strategy with the best headline mean IoU."""
    if "learned" in strategies:
        return "learned"

    def miou(name):
        value = table["models"][name]["miou"][table["headline"]]
        return value if math.isfinite(value) else -math.inf

    return max(strategies, key=miou)


def evaluate_run(run, data=None, tta="none", out=None, batch_size=BATCH_SIZE, device="cpu",
                 n_boot=1000, seed=0, stack=True, cross_fit=CROSS_FIT_FOLDS, log=None):
    """Score every fuser in ``RUN/fusion``, each member alone and the baseline on the run's validation tiles.

    ``data`` (a path or loaded :class:`~ensemble.data.MarsData`) must be the file the run was
    trained on (sha256 checked); the tiles are the run's validation split (the test set has
    no masks). ``tta`` is ``"none"`` (member logits from the run's cache) or ``"flip"``. Members run
    stacked unless ``stack=False``. Strategies are scored with ``cross_fit`` folds (see the
    module docstring; 0: the saved fusers, in-sample).

    Writes into ``out`` (default ``RUN/evaluation``): ``report.json`` and ``report.md``
    (:func:`~ensemble.report.write_report`; rows ``baseline`` and one per strategy,
    differences by paired bootstrap with ``n_boot`` replicates and ``seed``; member rows are
    the binary IoU of logit > 0 against truth == class, on labeled pixels for terrain members
    of a ``competition`` run, else on all pixels), every model scored in all three IoU
    conventions with the run objective's convention as the headline,
    ``confusion_<model>.png`` per model and ``differences.png``: the :data:`DIFFERENCE_TILES`
    tiles where ``learned`` (else the best strategy by headline mean IoU) and the baseline
    differ most.

    Raises :class:`RunError` when the run has no fitted fuser or no baseline, and
    :class:`EnsembleError` for an unknown ``tta`` or too few groups for ``cross_fit``.
    Returns ``{"table", "meta", "report_md", "report_json", "out"}`` (paths as strings).
    """
    log = log or (lambda line: None)
    check_tta(tta)
    if cross_fit == 1:
        raise EnsembleError("--cross-fit 1: cross-fitting needs at least 2 folds (0 scores the saved fusers in-sample)")
    folder = RunFolder(run)
    folder.manifest()
    strategies = fitted_strategies(run)
    if not strategies:
        raise RunError(f"{folder.fusion_dir}: no fitted fusers in {folder.path}; run "
                       f"`ensemble fuse --run {folder.path} --strategy all` first")
    fusers = {name: load_run_fuser(folder.path, name) for name in strategies}
    baseline = load_baseline(run, device)
    data = data if isinstance(data, MarsData) else load_data(data)
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    if len(val_idx) == 0:
        raise RunError(f"{folder.manifest_path}: the validation split is empty; nothing to evaluate")
    ids = tile_ids(data)[val_idx]
    truth = data.masks[val_idx]
    objective = folder.objective()
    valid = scored_pixels(truth, objective)
    n = len(val_idx)
    groups = data.groups[val_idx] if data.groups is not None else np.arange(n)
    if cross_fit:
        try:
            folds = fold_assignment(groups, cross_fit, seed)
        except ValueError as exc:
            raise EnsembleError(f"--cross-fit {cross_fit}: {exc}; use fewer folds or 0") from None
    how = f"cross-fitted over {cross_fit} folds" if cross_fit else "in-sample"
    log(f"evaluating baseline and {', '.join(strategies)} ({how}) on {n} validation tiles (tta {tta}, "
        f"objective {objective})")

    tile_cms, eces, preds = {}, {}, {}
    tile_cms[BASELINE], eces[BASELINE], preds[BASELINE] = _score(
        all_logits(baseline_logits_batches(baseline, data.images[val_idx], batch_size, device, tta), n), truth, valid)
    del baseline
    if tta == "none":
        member_logits = cached_val_logits(run, data, tile_ids(data), device=device, log=log, stack=stack)[0]
    else:
        members = load_members(run, device)
        batches = member_logits_batches(members, data.images[val_idx], batch_size, device, tta, stack)
        member_logits = all_logits(batches, n)
        del members
    member_ious = {name: binary_iou(truth == k, member_logits[:, k] > 0, None if k == 0 else valid)
                   for k, name in enumerate(CLASS_NAMES)}
    for name, fuser in fusers.items():
        log(f"  {name}")
        if cross_fit:
            fused_logits = cross_fitted_logits(fuser, member_logits, truth, folds, ids)
        else:
            fused_logits = fuser.predict_logits(member_logits)
        tile_cms[name], eces[name], preds[name] = _score(fused_logits, truth, valid)
        del fused_logits
    del member_logits

    table = build_table(tile_cms, eces, member_ious, baseline_name=BASELINE, n_boot=n_boot, seed=seed,
                        objective=objective)
    out_dir = Path(out) if out else folder.evaluation_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("confusion_*.png"):  # figures of fusers removed since the last evaluation
        if stale.stem[len("confusion_"):] not in tile_cms:
            stale.unlink()
    for name, cms in tile_cms.items():
        row = table["models"][name]
        title = f"{name}: {n} validation tiles, mIoU {table['headline']} {row['miou'][table['headline']]:.3f}"
        confusion_png(cms.sum(axis=0), out_dir / f"confusion_{name}.png", title)
    shown = _difference_strategy(table, strategies)
    idx = most_different_tiles(preds[BASELINE], preds[shown], truth, DIFFERENCE_TILES)  # most different first
    overlay_sheet(data.images[val_idx[idx]], truth[idx], preds[BASELINE][idx], preds[shown][idx],
                  out_dir / "differences.png", labels=("image", "truth", BASELINE, shown))
    val_ids = set(map(str, ids))
    meta = {
        "run": str(folder.path),
        "objective": objective,
        "data": str(data.path),
        "data_sha": data.sha256,
        "split": "val",  # the run's grouped validation split: the test set has no masks
        "n_tiles": int(n),
        "tta": tta,
        "fusers_fitted_on": fusers_fitted_on(cross_fit, data.groups is not None),
        "cross_fit_folds": int(cross_fit),
        "fuser_fit_tiles": {
            name: {"n_tiles": len(f.fitted_tile_ids_), "same_tiles": set(f.fitted_tile_ids_) == val_ids}
            for name, f in fusers.items()
        },
        "differences": {"strategy": shown, "tile_ids": [str(t) for t in ids[idx]]},
    }
    json_path, md_path = write_report(out_dir, table, meta)
    return {"table": table, "meta": meta, "report_md": str(md_path), "report_json": str(json_path),
            "out": str(out_dir)}
