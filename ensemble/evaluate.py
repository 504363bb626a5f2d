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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion.base import channel_argmax

from .core.classes import BASELINE, CLASS_NAMES, CONTROL, TUNED_BASELINE
from .core.data import MarsData, load_data, tile_ids
from .core.errors import EnsembleError, RunError
from .core.metrics import binary_iou, expected_calibration_error, per_tile_confusion
from .core.objectives import scored_pixels
from .core.runfolder import METRICS, RunFolder
from .crossfit import cross_fitted_logits, fitted_logits, fold_assignment
from .fuse import new_fuser
from .engines import resolve_engine
from .inference import (
    BATCH_SIZE,
    Predictor,
    cached_val_logits,
    check_run_data,
    check_tta,
    fitted_strategies,
    load_run_fuser,
)
from .render import confusion_png, most_different_tiles, overlay_sheet
from .report import build_table, write_report

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


@dataclass
class Scores:
    """What scoring leaves behind: per model its per-tile confusion matrices, ECE and uint8 masks."""

    val_idx: np.ndarray
    ids: np.ndarray
    truth: np.ndarray
    tile_cms: dict = field(default_factory=dict)
    eces: dict = field(default_factory=dict)
    preds: dict = field(default_factory=dict)
    member_ious: dict = field(default_factory=dict)

    def add(self, name, class_logits, valid):
        self.tile_cms[name], self.eces[name], self.preds[name] = _score(class_logits, self.truth, valid)


def _folds(data, val_idx, cross_fit, seed):
    groups = data.groups[val_idx] if data.groups is not None else np.arange(len(val_idx))
    try:
        return fold_assignment(groups, cross_fit, seed)
    except ValueError as exc:
        raise EnsembleError(f"--cross-fit {cross_fit}: {exc}; use fewer folds or 0") from None


def score_models(folder, data, fusers, tta="none", batch_size=BATCH_SIZE, device="cpu", stack=None,
                 cross_fit=CROSS_FIT_FOLDS, seed=0, engine="auto", log=None):
    """Score the baseline, each member alone and each fuser of ``fusers`` on the run's validation tiles.

    Every network runs through a :class:`~ensemble.inference.Predictor`; with ``tta="none"``
    the member logits come from the run's cache. Fusers are applied cross-fitted over
    ``cross_fit`` folds of validation rover stops (0: the fitted fusers, in-sample).
    Returns :class:`Scores`.
    """
    log = log or (lambda line: None)
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    if len(val_idx) == 0:
        raise RunError(f"{folder.manifest_path}: the validation split is empty; nothing to evaluate")
    scores = Scores(val_idx=val_idx, ids=tile_ids(data)[val_idx], truth=data.masks[val_idx])
    objective = folder.objective()
    valid = scored_pixels(scores.truth, objective)
    folds = _folds(data, val_idx, cross_fit, seed) if cross_fit else None
    how = f"cross-fitted over {cross_fit} folds" if cross_fit else "in-sample"
    log(f"evaluating baseline and {', '.join(fusers)} ({how}) on {len(val_idx)} validation tiles (tta {tta}, "
        f"objective {objective})")
    images = data.images[val_idx]
    baseline = Predictor(folder.path, BASELINE, device, tta, batch_size, engine=engine, log=log)
    baseline_logits = baseline.predict_logits(images)
    scores.add(BASELINE, baseline_logits, valid)
    log(f"  {TUNED_BASELINE}")  # the baseline gets the validation-tuned per-class offsets the fusers can learn
    scores.add(TUNED_BASELINE, fitted_logits(new_fuser("bias", objective, seed), baseline_logits, scores.truth, folds,
                                             scores.ids), valid)
    del baseline, baseline_logits
    if folder.control_names():  # the ensembling control, scored like the baseline
        control = Predictor(folder.path, CONTROL, device, tta, batch_size, engine=engine, log=log)
        scores.add(CONTROL, control.predict_logits(images), valid)
        del control
    if tta == "none":
        member_logits = cached_val_logits(folder.path, data, tile_ids(data), device=device, log=log, stack=stack,
                                          engine=engine)[0]
    else:
        members = Predictor(folder.path, None, device, tta, batch_size, stack, engine, log)
        member_logits = members.predict_member_logits(images)
        del members
    scores.member_ious = {name: binary_iou(scores.truth == k, member_logits[:, k] > 0, None if k == 0 else valid)
                          for k, name in enumerate(CLASS_NAMES)}
    for name, fuser in fusers.items():
        log(f"  {name}")
        if cross_fit:
            fused_logits = cross_fitted_logits(fuser, member_logits, scores.truth, folds, scores.ids)
        else:
            fused_logits = fuser.predict_logits(member_logits)
        scores.add(name, fused_logits, valid)
        del fused_logits
    return scores


def write_figures(out_dir, table, scores, images, strategies):
    """``confusion_<model>.png`` per model (stale ones of removed fusers deleted) and ``differences.png``.

    Returns ``(shown strategy, indices of the tiles shown)``.
    """
    for stale in out_dir.glob("confusion_*.png"):  # figures of fusers removed since the last evaluation
        if stale.stem[len("confusion_"):] not in scores.tile_cms:
            stale.unlink()
    n = len(scores.val_idx)
    for name, cms in scores.tile_cms.items():
        row = table["models"][name]
        title = f"{name}: {n} validation tiles, mIoU {table['headline']} {row['miou'][table['headline']]:.3f}"
        confusion_png(cms.sum(axis=0), out_dir / f"confusion_{name}.png", title)
    shown = _difference_strategy(table, strategies)
    preds = scores.preds
    idx = most_different_tiles(preds[BASELINE], preds[shown], scores.truth, DIFFERENCE_TILES)  # most different first
    overlay_sheet(images[idx], scores.truth[idx], preds[BASELINE][idx], preds[shown][idx],
                  out_dir / "differences.png", labels=("image", "truth", BASELINE, shown))
    return shown, idx


def training_threads(folder):
    """``"soil 1, ..., baseline 2"``: the torch threads each network trained with (they change the numbers)."""
    parts = []
    for name in [*CLASS_NAMES, BASELINE, *folder.control_names()]:
        path = folder.network_dir(name) / METRICS
        history = folder.read_json(path).get("history", []) if path.exists() else []
        threads = sorted({h["threads"] for h in history if "threads" in h})
        if threads:
            parts.append(f"{name} {'/'.join(map(str, threads))}")
    return ", ".join(parts) or "not recorded"


def _meta(folder, data, scores, fusers, tta, engine, cross_fit, shown, idx):
    val_ids = set(map(str, scores.ids))
    return {
        "training_threads": training_threads(folder),
        "run": str(folder.path),
        "objective": folder.objective(),
        "data": str(data.path),
        "data_sha": data.sha256,
        "split": "val",  # the run's grouped validation split: the test set has no masks
        "n_tiles": int(len(scores.val_idx)),
        "tta": tta,
        "engine": engine,
        "fusers_fitted_on": fusers_fitted_on(cross_fit, data.groups is not None),
        "cross_fit_folds": int(cross_fit),
        "fuser_fit_tiles": {
            name: {"n_tiles": len(f.fitted_tile_ids_), "same_tiles": set(f.fitted_tile_ids_) == val_ids}
            for name, f in fusers.items()
        },
        "differences": {"strategy": shown, "tile_ids": [str(t) for t in scores.ids[idx]]},
    }


def evaluate_run(run, data=None, tta="none", out=None, batch_size=BATCH_SIZE, device="cpu",
                 n_boot=1000, seed=0, stack=None, cross_fit=CROSS_FIT_FOLDS, engine="auto", curve=False, log=None):
    """Score every fuser in ``RUN/fusion``, each member alone and the baseline on the run's validation tiles.

    ``data`` (a path or loaded :class:`~ensemble.core.data.MarsData`) must be the file the run was
    trained on (sha256 checked); the tiles are the run's validation split (the test set has
    no masks). ``tta`` is ``"none"`` (member logits from the run's cache) or ``"flip"``. Members run
    stacked (``stack=True``), one by one (``False``) or the faster way for the engine (``None``,
    :func:`~ensemble.inference.resolve_stack`). Strategies are scored with ``cross_fit`` folds (see the
    module docstring; 0: the saved fusers, in-sample).

    Writes into ``out`` (default ``RUN/evaluation``): ``report.json`` and ``report.md``
    (:func:`~ensemble.report.write_report`; rows ``baseline`` and one per strategy,
    differences by paired bootstrap with ``n_boot`` replicates and ``seed``; member rows are
    the binary IoU of logit > 0 against truth == class, on labeled pixels for terrain members
    of a ``competition`` run, else on all pixels), every model scored in all three IoU
    conventions with the run objective's convention as the headline,
    ``confusion_<model>.png`` per model and ``differences.png``: the :data:`DIFFERENCE_TILES`
    tiles where ``learned`` (else the best strategy by headline mean IoU) and the baseline
    differ most. Row ``baseline_bias`` is the baseline with one logit offset per class tuned for the
    headline mIoU (:class:`fusion.BiasFuser`, cross-fitted like the fusers, seed ``seed``), and every
    other row is also compared with it (``tuned_differences``): the fusers are fitted on these tiles,
    so this is the baseline given the same chance. A run with an ensembling control
    (``ensemble control``) gets a ``control`` row.
    ``curve=True`` adds the budget curve (:mod:`ensemble.curve`): ``budget_curve.json``,
    ``budget_curve.png`` and a table in ``report.md``.

    Raises :class:`RunError` when the run has no fitted fuser or no baseline, and
    :class:`EnsembleError` for an unknown ``tta`` or too few groups for ``cross_fit``.
    Returns ``{"table", "meta", "report_md", "report_json", "out"}`` (paths as strings).
    """
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
    data = data if isinstance(data, MarsData) else load_data(data)
    scores = score_models(folder, data, fusers, tta, batch_size, device, stack, cross_fit, seed, engine, log)
    table = build_table(scores.tile_cms, scores.eces, scores.member_ious, baseline_name=BASELINE, n_boot=n_boot,
                        seed=seed, objective=folder.objective(), tuned_name=TUNED_BASELINE)
    out_dir = Path(out) if out else folder.evaluation_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if curve:
        from .curve import budget_curve, write_curve
        from members.parallel import available_cores

        folds = _folds(data, scores.val_idx, cross_fit, seed) if cross_fit else None
        table["budget_curve"] = budget_curve(folder, data, scores.val_idx, strategies, folds, scores.ids,
                                             available_cores(), device, stack, log)
        write_curve(out_dir, table["budget_curve"])
    shown, idx = write_figures(out_dir, table, scores, data.images[scores.val_idx], strategies)
    meta = _meta(folder, data, scores, fusers, tta, resolve_engine(engine, device), cross_fit, shown, idx)
    json_path, md_path = write_report(out_dir, table, meta)
    return {"table": table, "meta": meta, "report_md": str(md_path), "report_json": str(json_path),
            "out": str(out_dir)}
