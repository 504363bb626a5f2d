"""Evaluate a run: every fitted fuser, each member alone and the baseline, on the same validation tiles.

The tiles are the run's grouped validation split (``manifest.json: split.val_indices``): the
members and the baseline never trained on them. The saved fusers were fitted on these same
tiles (there is no third split), so by default each strategy is scored cross-fitted
(:mod:`ensemble.evaluation.crossfit`): every tile's fused prediction comes from a copy of the fuser
fitted on the other folds of validation rover stops. ``cross_fit=0`` scores the saved
fusers in-sample instead; ``meta.fusers_fitted_on`` says which. The test set has no masks.

Memory: one model's class probabilities are held at a time; each model leaves behind only
its per-tile confusion matrices, its ECE and its uint8 predicted masks.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion import FUSERS, new_fuser
from fusion.base import _as_tensor, channel_argmax

from ..core.classes import (
    BASELINE,
    CLASS_NAMES,
    CONTROL,
    STUDENT,
    TUNED_BASELINE,
    TUNED_STUDENT,
)
from ..core.data import MarsData, load_data, tile_ids
from ..core.errors import EnsembleError, RunError
from ..core.fileio import check_output
from ..core.metrics import binary_iou, expected_calibration_error, per_tile_confusion
from ..core.objectives import scored_pixels
from ..core.progress import Progress
from ..core.runfolder import RunFolder
from ..inference import (
    MEMBERS,
    InferenceOptions,
    Predictor,
    check_run_data,
    fitted_strategies,
    fuser_inputs,
    load_run_fuser,
    source_logits,
)
from ..inference.engines import resolve_engine
from ..inference.options import split_options
from ..reporting.figures import (
    ROBUSTNESS_PNG,
    robustness_png,
    write_curve,
)
from ..reporting.report import write_report
from .comparisons import (
    ABLATED,
    ablation_table,
    ablation_variants,
    best_strategy,
    budget_comparisons,
    served_models,
    student_teacher,
    training_threads,
    tta_gains,
)
from .crossfit import cross_fitted_logits, fitted_logits, fold_assignment
from .curve import budget_curve, check_snapshots, read_curve
from .figures import write_figures
from .frames import Frames, frames_table, validation_frames
from .robustness import (
    PLAIN_NETWORKS,
    Benchmark,
    CleanSet,
    FrameSet,
    model_sources,
    robust_models,
    robustness_scores,
    robustness_table,
)
from .settings import EvaluateSettings
from .table import build_table


def fusers_fitted_on(cross_fit, by_groups=True):
    """What ``meta.fusers_fitted_on`` says of how the strategies were scored."""
    if not cross_fit:
        return "validation split (same tiles: in-sample)"
    unit = "rover stops" if by_groups else "tiles (the data has no groups)"
    return f"cross-fitted: {cross_fit} folds of validation {unit}, each scored by a fuser fitted without it"


def _score(class_logits, truth, valid):
    """Per-tile confusion matrices, ECE of the softmax on ``valid`` pixels and uint8 masks of class logits
    (N, 5, H, W)."""
    class_logits = _as_tensor(class_logits)  # cached logits are read-only memory maps: read, never written
    pred = channel_argmax(class_logits).to(torch.uint8).numpy()
    ece = expected_calibration_error(torch.softmax(class_logits, dim=1), truth, valid=valid)
    return per_tile_confusion(truth, pred), ece, pred


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
    ablation_cms: dict = field(default_factory=dict)
    frames: "Frames" = None

    def add(self, name, class_logits, valid):
        self.tile_cms[name], self.eces[name], self.preds[name] = _score(class_logits, self.truth, valid)


def _folds(data, val_idx, cross_fit, seed):
    groups = data.groups[val_idx] if data.groups is not None else np.arange(len(val_idx))
    try:
        return fold_assignment(groups, cross_fit, seed)
    except ValueError as exc:
        raise EnsembleError(f"--cross-fit {cross_fit}: {exc}; use fewer folds or 0") from None


def validation_logits(folder, data, sources, images, *, options, log=None):
    """``{source: logits (N, 5, H, W)}`` of each source on the run's validation tiles ``images``.

    Without TTA they come from (and go to) the run's logits cache; with ``options.tta == "flip"`` every
    source runs again through its :class:`~ensemble.inference.Predictor`.
    """
    if options.tta == "none":
        return source_logits(folder, data, sources, options=options, log=log)[0]
    out = {}
    for source in sources:
        predictor = Predictor(folder.path, None if source == MEMBERS else source, options=options, log=log)
        out[source] = predictor.predict_source_logits(images)
        del predictor
    return out


def score_models(folder, data, fusers, *, options=None, settings=None, log=None, **keywords):
    """Score the baseline, the control, each member alone and each fuser of ``fusers`` on the run's validation tiles.

    Every network runs through a :class:`~ensemble.inference.Predictor` with ``options``
    (:class:`~ensemble.inference.options.InferenceOptions`); without TTA the logits come from the run's cache.
    ``settings`` (:class:`~ensemble.evaluation.settings.EvaluateSettings`) give ``cross_fit``, ``seed``,
    ``ablation`` and ``frames``; the fields of either may be given as keywords. Each fuser reads the logits of
    its sources and is applied cross-fitted over ``cross_fit`` folds of validation rover stops (0: the fitted fusers,
    in-sample). With ``frames`` every model is also scored on whole validation frames rebuilt from
    their ``:top``/``:bottom`` tiles, by sliding windows ``options.step`` tiles apart (``Scores.frames``,
    :class:`Frames`); each frame is fused by the same fold's fuser as its tiles. Returns :class:`Scores`.
    """
    shown, log = log, log or (lambda line: None)
    given = split_options(keywords, options=InferenceOptions, settings=EvaluateSettings)
    options = InferenceOptions.of(options, **given["options"])
    settings = (settings or EvaluateSettings()).replace(**given["settings"])
    cross_fit, seed, ablation = settings.cross_fit, settings.seed, settings.ablation
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    if len(val_idx) == 0:
        raise RunError(f"{folder.manifest_path}: the validation split is empty; nothing to evaluate")
    scores = Scores(val_idx=val_idx, ids=tile_ids(data)[val_idx], truth=data.masks[val_idx])
    objective = folder.objective()
    valid = scored_pixels(scores.truth, objective)
    folds = _folds(data, val_idx, cross_fit, seed) if cross_fit else None
    how = f"cross-fitted over {cross_fit} folds" if cross_fit else "in-sample"
    log(f"evaluating baseline and {', '.join(fusers)} ({how}) on {len(val_idx)} validation tiles (tta {options.tta}, "
        f"objective {objective})")
    controls = [CONTROL] if folder.control_names() else []
    plain = [*controls, *students(folder)]  # scored like the baseline: the control, the distilled student
    sources = list(dict.fromkeys([BASELINE, *plain, MEMBERS, *(s for f in fusers.values() for s in f.sources)]))
    logits = validation_logits(folder, data, sources, data.images[val_idx], options=options, log=log)
    scores.add(BASELINE, logits[BASELINE], valid)
    for name in plain:
        scores.add(name, logits[name], valid)
    if settings.frames:
        scores.frames = validation_frames(folder, data, scores, sources=sources, folds=folds, options=options,
                                           log=log)
        for name in (BASELINE, *plain):
            scores.frames.add(name, scores.tile_cms[name], scores.frames.logits[name])
    frame_set = scores.frames
    member_logits = logits[MEMBERS]
    scores.member_ious = {name: binary_iou(scores.truth == k, member_logits[:, k] > 0, None if k == 0 else valid)
                          for k, name in enumerate(CLASS_NAMES)}
    meter = Progress(len(fusers), shown, unit="models", desc="scoring")
    for name, fuser in fusers.items():
        meter.step(name)
        inputs = fuser_inputs(logits, fuser.sources)
        frame_inputs = None if frame_set is None else fuser_inputs(frame_set.logits, fuser.sources)
        frame_logits = None
        if cross_fit:
            fused_logits = cross_fitted_logits(fuser, inputs, scores.truth, folds, scores.ids,
                                               extra=None if frame_set is None else (frame_inputs, frame_set.folds))
            if frame_set is not None:
                fused_logits, frame_logits = fused_logits
        else:
            if not fuser.is_fitted():  # the tuned baseline of a run that has none fitted: fitted here, in-sample
                fused_logits = fitted_logits(fuser, inputs, scores.truth, None, scores.ids)
            else:
                fused_logits = fuser.predict_logits(inputs)
            if frame_set is not None:
                frame_logits = fuser.predict_logits(frame_inputs)
        scores.add(name, fused_logits, valid)
        if frame_set is not None:
            frame_set.add(name, scores.tile_cms[name], frame_logits)
        del fused_logits, inputs, frame_inputs, frame_logits
    meter.close()
    if ablation and ABLATED in fusers:
        inputs = fuser_inputs(logits, fusers[ABLATED].sources)
        for variant, change in ablation_variants(fusers[ABLATED]):
            log(f"  {ABLATED} {variant}")
            fuser = FUSERS[ABLATED](**{**fusers[ABLATED].get_params(), **change})
            fused_logits = (cross_fitted_logits(fuser, inputs, scores.truth, folds, scores.ids) if cross_fit else
                            fuser.fit(inputs, scores.truth).predict_logits(inputs).numpy())
            scores.ablation_cms[variant] = _score(fused_logits, scores.truth, valid)[0]
            del fused_logits
    return scores


#: The strategy whose members are left out one at a time by ``evaluate --ablation``.
def students(folder):
    """``[STUDENT]`` when the run has a distilled student, else ``[]``."""
    return [STUDENT] if folder.best_path(STUDENT).exists() else []


def scored_fusers(folder, strategies, seed):
    """The fusers an evaluation scores: the run's fitted ones, with ``baseline_bias`` first (a fresh one when
    the run has none fitted, so every run is compared with its tuned baseline), and likewise ``student_bias``
    when the run has a student."""
    fusers = {name: load_run_fuser(folder.path, name) for name in strategies}
    tuned = fusers.pop(TUNED_BASELINE, None) or new_fuser(TUNED_BASELINE, folder.objective(), seed)
    if students(folder) and TUNED_STUDENT not in fusers:
        fusers[TUNED_STUDENT] = new_fuser(TUNED_STUDENT, folder.objective(), seed)
    return {TUNED_BASELINE: tuned, **fusers}


def _meta(folder, data, scores, fusers, *, tta, engine, cross_fit, shown, idx):
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
            for name, f in fusers.items() if f.is_fitted()
        },
        "differences": {"strategy": shown, "tile_ids": [str(t) for t in scores.ids[idx]]},
    }


def robustness_benchmark(folder, data, scores, fusers, table, *, options, settings, log=None):
    """The robustness benchmark (:mod:`ensemble.evaluation.robustness`) of the baseline, the bias-tuned baseline,
    the served default and the student (with its tuned offsets and its teacher) when the run has one, with the fusers
    cross-fitted like the clean evaluation's (``settings``: cross-fit folds, seed, bootstrap replicates, the
    corruptions); on whole frames too when the evaluation scored them (``--frames``)."""
    cross_fit, seed, n_boot, corruptions = settings.cross_fit, settings.seed, settings.n_boot, settings.corruptions
    teacher = student_teacher(folder) if students(folder) else None
    models = robust_models(table["best_strategy"], student=bool(students(folder)),
                           teacher=teacher if teacher in fusers or teacher in PLAIN_NETWORKS else None)
    sources = model_sources(models, fusers)
    images = data.images[scores.val_idx]
    clean_logits = validation_logits(folder, data, sources, images, options=options, log=log)
    folds = _folds(data, scores.val_idx, cross_fit, seed) if cross_fit else None
    frames = None
    if scores.frames is not None:
        pairs = scores.frames.pairs
        frames = FrameSet(images=np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=1),
                          truth=scores.frames.truth, folds=scores.frames.folds,
                          clean={m: scores.frames.cms[m][1] for m in models})
    clean = CleanSet(images=images, scores=scores, logits=clean_logits, folds=folds, frames=frames)
    result = robustness_scores(folder, clean, fusers, models=models, options=options,
                               benchmark=Benchmark(corruptions=corruptions, seed=seed), log=log)
    return robustness_table(result, table["headline"], n_boot=n_boot, seed=seed)


def evaluate_run(run, *, data=None, options=None, settings=None, log=None, **keywords):
    """Score every fuser in ``RUN/fusion``, each member alone and the baseline on the run's validation tiles.

    ``data`` (a path or loaded :class:`~ensemble.core.data.MarsData`) must be the file the run was
    trained on (sha256 checked); the tiles are the run's validation split (the test set has
    no masks). ``options`` (:class:`~ensemble.inference.options.InferenceOptions`) say how the networks run
    (without TTA the logits come from the run's cache), ``settings``
    (:class:`~ensemble.evaluation.settings.EvaluateSettings`) what is computed and where it is written; the
    fields of either may also be given as keywords. Strategies are scored with ``cross_fit`` folds (see the
    module docstring; 0: the saved fusers, in-sample).

    Writes into ``out`` (default ``RUN/evaluation``; for a shipped, read-only run ``runs/evaluations/<name>``):
    ``report.json`` and ``report.md`` (:func:`~ensemble.reporting.report.write_report`; rows ``baseline`` and one
    per strategy, differences by paired bootstrap with ``n_boot`` replicates and ``seed``; member rows are
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
    ``ablation=True`` also scores the ``hybrid`` with each member left out in turn (its logit map
    replaced by zeros) and with its other mixing weight, cross-fitted the same way (``table["ablation"]``).
    ``tta_gain=True`` scores every served model a second time with flip TTA (``tta`` must be ``"none"``) and
    records the gains and each model's default TTA (:func:`tta_gains`, ``table["tta_gain"]``), which
    ``predict``, ``export`` and ``api.predictor`` use when no TTA is named.
    ``curve=True`` adds the budget curve (:mod:`ensemble.evaluation.curve`): ``budget_curve.json``,
    ``budget_curve.png`` and a table in ``report.md``; ``curve_from`` (a ``budget_curve.json`` written by an
    earlier evaluation) reuses that curve instead, for a run whose snapshots are not at hand (the shipped
    run's are not shipped). ``frames=True`` also scores every model on the validation images rebuilt as whole
    frames from their ``:top``/``:bottom`` tiles, stitched by sliding windows ``options.step`` tiles apart, beside the
    same frames predicted tile by tile (``table["frames"]``, :func:`frames_table`). ``robustness=True`` adds the
    robustness benchmark (:func:`robustness_benchmark`, ``table["robustness"]``, ``robustness.png``);
    ``corruptions`` limits it to those corruption names.

    Raises :class:`RunError` when the run has no fitted fuser or no baseline, and
    :class:`EnsembleError` for an unknown ``tta`` or too few groups for ``cross_fit``.
    Returns ``{"table", "meta", "report_md", "report_json", "out"}`` (paths as strings).
    """
    given = split_options(keywords, options=InferenceOptions, settings=EvaluateSettings)
    options = InferenceOptions.of(options, **given["options"])
    settings = (settings or EvaluateSettings()).replace(**given["settings"])
    out, cross_fit, n_boot, seed = settings.out, settings.cross_fit, settings.n_boot, settings.seed
    curve, curve_from, ablation, tta_gain = settings.curve, settings.curve_from, settings.ablation, settings.tta_gain
    robustness = settings.robustness
    if tta_gain and options.tta != "none":
        raise EnsembleError(f"--tta-gain compares flip with no TTA, so it needs --tta none, not {options.tta!r}")
    folder = RunFolder(run)
    folder.manifest()
    out_dir = Path(out) if out else folder.report_dir
    check_output("--out", out_dir, "a folder for the report", folder=True)  # before hours of scoring
    strategies = fitted_strategies(run)
    if not strategies:
        raise RunError(f"{folder.fusion_dir}: no fitted fusers in {folder.path}; run "
                       f"`ensemble fuse --run {folder.path} --strategy all` first")
    fusers = scored_fusers(folder, strategies, seed)
    data = data if isinstance(data, MarsData) else load_data(data)
    if ablation and ABLATED not in fusers:
        raise RunError(f"--ablation: {folder.path} has no {ABLATED} fuser; fit it with: ensemble fuse --run "
                       f"{folder.path} --strategy {ABLATED}")
    # a missing or changed snapshot is refused before anything is scored
    snapshot_epochs = check_snapshots(folder) if curve and curve_from is None else None
    scores = score_models(folder, data, fusers, options=options, settings=settings, log=log)
    table = build_table(scores.tile_cms, scores.eces, scores.member_ious, baseline_name=BASELINE, n_boot=n_boot,
                        seed=seed, objective=folder.objective(), tuned_name=TUNED_BASELINE)
    served = [name for name in served_models(scores, fusers)
              if name in strategies or name in (BASELINE, CONTROL, STUDENT)]
    table["best_strategy"] = best_strategy(table, served)
    if tta_gain:
        flip_scores = score_models(folder, data, fusers, options=options.replace(tta="flip"),
                                   settings=settings.replace(ablation=False, frames=False), log=log)
        table["tta_gain"] = tta_gains(scores, flip_scores, served, table["headline"], n_boot, seed)
        del flip_scores
    table["budgets"] = budget_comparisons(folder, table, scores.tile_cms, n_boot, seed)
    if scores.ablation_cms:
        table["ablation"] = ablation_table(scores, table, n_boot, seed)
    if scores.frames is not None:
        table["frames"] = frames_table(scores.frames, table["headline"], n_boot, seed)
    if robustness:
        table["robustness"] = robustness_benchmark(folder, data, scores, fusers, table, options=options,
                                                   settings=settings, log=log)
    if log and out is None and folder.read_only:
        log(f"{folder.path} is a shipped run (read-only): writing the report to {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if curve_from is not None:
        table["budget_curve"] = read_curve(curve_from)
        write_curve(out_dir, table["budget_curve"])
    elif curve:
        folds = _folds(data, scores.val_idx, cross_fit, seed) if cross_fit else None
        member_level = [name for name in strategies if FUSERS[name].sources == (MEMBERS,)]
        table["budget_curve"] = budget_curve(folder, data, scores, strategies=member_level, folds=folds,
                                             epochs=snapshot_epochs, options=options, log=log)
        write_curve(out_dir, table["budget_curve"])
    if robustness:
        robustness_png(out_dir / ROBUSTNESS_PNG, table["robustness"])
    elif (out_dir / ROBUSTNESS_PNG).exists():  # an earlier evaluation's figure, not this report's
        (out_dir / ROBUSTNESS_PNG).unlink()
    shown, idx = write_figures(out_dir, table, scores, data.images[scores.val_idx], strategies)
    meta = _meta(folder, data, scores, fusers, tta=options.tta, engine=resolve_engine(options.engine, options.device),
                 cross_fit=cross_fit, shown=shown, idx=idx)
    json_path, md_path = write_report(out_dir, table, meta)
    return {"table": table, "meta": meta, "report_md": str(md_path), "report_json": str(json_path),
            "out": str(out_dir)}
