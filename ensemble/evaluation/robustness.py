"""The robustness benchmark: served models scored on the validation tiles under every corruption and severity.

Each of :data:`~ensemble.core.corruptions.CORRUPTIONS` is applied at each severity to the run's validation
tiles (seeded, so every model sees the same corrupted tiles; :func:`~ensemble.core.corruptions.corrupt`), and
the corrupted tiles go through the same networks and fusers as the clean ones. A resampled tile (another
size) is brought back to the training scale exactly as ``predict --scale`` brings an image
(:func:`~ensemble.inference.windows.to_training_scale`): one window then covers it, so the batched logits
equal the sliding-window ones. Fusers are cross-fitted as in the clean evaluation: every fold's copy is
fitted once on the clean logits of the other folds and fuses the corrupted tiles of its fold, so a model is
deployed exactly as it would be on a user's corrupted image.

Per model it leaves per-tile confusion matrices, from which :func:`robustness_table` reports per corruption
and severity the mIoU, per-class IoU and the drop from clean with its paired-bootstrap interval, and as a
headline the clean mIoU, the mean over every corruption and severity (mPC), their ratio (rPC), the worst
corruption, and the same split into the corruptions the training recipe draws and the held-out ones.
"""
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fusion.base import channel_argmax

from ..core.classes import BASELINE, STUDENT, TERRAIN_CLASSES, TERRAIN_NAMES, TUNED_BASELINE, TUNED_STUDENT
from ..core.corruptions import CORRUPTIONS, FAMILIES, SEVERITIES, corrupt, get_corruption
from ..core.metrics import iou_per_class, mean_ious, per_tile_confusion
from ..core.progress import Progress
from ..inference import MEMBERS, Predictor, fuser_inputs
from ..inference.windows import to_training_scale
from .bootstrap import paired_bootstraps
from .crossfit import apply_fold_fusers, fold_fusers

#: The severity whose drops the targets are set at.
MIDDLE_SEVERITY = 2


#: Models that are one network's masks, with no fuser: their logits are the network's own.
PLAIN_NETWORKS = (BASELINE, STUDENT)


def model_sources(models, fusers):
    """The sources (networks) the ``models`` read, each once: a plain network's own, or their fusers'."""
    return list(dict.fromkeys(s for m in models for s in ((m,) if m in PLAIN_NETWORKS else fusers[m].sources)))


def robust_models(best, *, student=False, teacher=None):
    """The models the benchmark scores: the baseline, the bias-tuned baseline, with ``student`` (the run has one)
    the student, its tuned offsets and its ``teacher`` (a strategy, when known), and the served default ``best``,
    always last (the one the report details)."""
    others = [BASELINE, TUNED_BASELINE, *((STUDENT, TUNED_STUDENT, teacher) if student else ())]
    return [*dict.fromkeys(m for m in others if m is not None and m != best), best]


def corrupted_tiles(images, name, severity, seed):
    """The validation tiles ``images`` (N, H, W) float 0-1 under one corruption, at the training scale.

    A resampled tile is brought back by the predictor's own resampler at the corruption's ``--scale``.
    """
    corruption = get_corruption(name)
    out = corrupt(images, name, severity, seed=seed)
    scale = corruption.scale(severity)
    if out.shape[1:] != images.shape[1:]:
        out = to_training_scale(torch.from_numpy(out), scale).numpy()
    return out


@dataclass
class RobustnessScores:
    """Per model the clean confusion matrices (one per tile or frame) and those under each (corruption, severity);
    ``frames`` holds the same for whole frames when they were scored."""

    models: list
    seed: int
    clean: dict = field(default_factory=dict)
    corrupted: dict = field(default_factory=dict)  # {(model, corruption, severity): (N, 5, 5)}
    frames: "RobustnessScores" = None


@dataclass
class FrameSet:
    """Whole validation frames to score under the corruptions too: images (F, H, W) float 0-1, their true masks,
    each frame's cross-fitting fold (``None`` in-sample), and per model the clean stitched confusion matrices."""

    images: np.ndarray
    truth: np.ndarray
    folds: np.ndarray
    clean: dict


def _class_logits(model, logits, fitted, folds):
    if model in PLAIN_NETWORKS:
        return logits[model]
    fuser = fitted[model]
    inputs = fuser_inputs(logits, fuser["sources"])
    if folds is None:
        return fuser["fuser"].predict_logits(torch.from_numpy(np.asarray(inputs))).numpy()
    return apply_fold_fusers(fuser["folds"], inputs, folds)


def _confusions(models, logits, fitted, folds, truth):
    """``{model: per-image confusion matrices}`` of the sources' ``logits`` fused by each model."""
    out = {}
    for model in models:
        class_logits = _class_logits(model, logits, fitted, folds)
        out[model] = per_tile_confusion(truth, channel_argmax(torch.from_numpy(class_logits)).to(torch.uint8).numpy())
    return out


def _fold_fitted(models, fusers, clean_logits, scores, folds):
    """Per fused model its sources, its fitted fuser and, cross-fitting, its copies fitted per fold."""
    fitted = {}
    for model in models:
        if model in PLAIN_NETWORKS:
            continue
        fuser = fusers[model]
        inputs = fuser_inputs(clean_logits, fuser.sources)
        if folds is None and not fuser.is_fitted():  # a tuned baseline a run never fitted: fitted here, in-sample
            fuser.fit(np.asarray(inputs), scores.truth, tile_ids=[str(i) for i in scores.ids])
        fitted[model] = {"sources": fuser.sources, "fuser": fuser,
                         "folds": None if folds is None else fold_fusers(fuser, inputs, scores.truth, folds,
                                                                         scores.ids)}
        del inputs
    return fitted


def _stitched(predictors, frames):
    """``{source: logits (F, 5, H, W)}`` of frames already at the training scale, by sliding windows."""
    return {source: np.concatenate([p.stitched_source_logits(frame).numpy() for frame in frames])
            for source, p in predictors.items()}


@dataclass
class CleanSet:
    """The clean evaluation the benchmark corrupts: the validation ``images`` (N, H, W) float 0-1, its ``scores``
    (:class:`~ensemble.evaluation.evaluate.Scores`: the clean confusion matrices are the reference), the sources'
    clean ``logits`` (what the fusers' fold copies are fitted on; ``None`` when no fuser is scored), each tile's
    fold (``folds``; ``None``: the fitted fusers, in-sample), and the whole ``frames`` (:class:`FrameSet`) when
    they are scored too."""

    images: np.ndarray
    scores: object
    logits: dict = None
    folds: np.ndarray = None
    frames: "FrameSet" = None


@dataclass(frozen=True)
class Benchmark:
    """Which ``corruptions`` (names; ``None``: all) at which ``severities``, and the ``seed`` of their draws."""

    corruptions: tuple = None
    severities: tuple = SEVERITIES
    seed: int = 0


def robustness_scores(folder, clean, fusers, *, models, options, benchmark=None, log=None):
    """Score ``models`` on the validation tiles under every corruption and severity of ``benchmark``
    (:class:`Benchmark`; default all, seed 0) (:class:`RobustnessScores`).

    ``clean`` is the :class:`CleanSet` (the tiles, their clean scores and logits, their folds, the frames),
    ``fusers`` the run's fusers by name. Whole frames, when ``clean.frames`` holds them, are scored under each
    corruption too, by sliding windows, fused by the same fold's copy as their tiles.
    """
    benchmark = benchmark or Benchmark()
    images, scores, folds, frames = clean.images, clean.scores, clean.folds, clean.frames
    corruptions, severities, seed = benchmark.corruptions, benchmark.severities, benchmark.seed
    clean_logits = clean.logits
    shown, log = log, log or (lambda line: None)
    names = list(corruptions) if corruptions else [c.name for c in CORRUPTIONS]
    sources = model_sources(models, fusers)
    fitted = _fold_fitted(models, fusers, clean_logits, scores, folds)
    predictors = {s: Predictor(folder.path, None if s == MEMBERS else s, options=options, log=log) for s in sources}
    result = RobustnessScores(models=list(models), seed=seed, clean={m: scores.tile_cms[m] for m in models})
    if frames is not None:
        result.frames = RobustnessScores(models=list(models), seed=seed, clean=dict(frames.clean))
    meter = Progress(len(names) * len(severities), shown, unit="steps", desc="robustness")
    for name in names:
        for severity in severities:
            meter.step(f"{name} severity {severity}")
            tiles = corrupted_tiles(images, name, severity, seed)
            logits = {s: predictors[s].predict_source_logits(tiles) for s in sources}
            for model, cms in _confusions(models, logits, fitted, folds, scores.truth).items():
                result.corrupted[(model, name, severity)] = cms
            del logits, tiles
            if frames is None:
                continue
            logits = _stitched(predictors, corrupted_tiles(frames.images, name, severity, seed))
            for model, cms in _confusions(models, logits, fitted, frames.folds, frames.truth).items():
                result.frames.corrupted[(model, name, severity)] = cms
            del logits
    meter.close()
    return result


def _terrain_ious(cm, convention):
    return dict(zip(TERRAIN_NAMES, map(float, iou_per_class(cm, convention)[list(TERRAIN_CLASSES)])))


def robustness_table(result, headline, n_boot=1000, seed=0, alpha=0.05):
    """The benchmark's report: per model its rows and headline (see the module docstring), JSON-ready; with
    ``"frames"`` the same for whole frames when they were scored."""
    metric = functools.partial(mean_ious, convention=headline)
    corruptions = list(dict.fromkeys(name for _, name, _ in result.corrupted))
    severities = sorted({severity for _, _, severity in result.corrupted})
    keys = [(name, severity) for name in corruptions for severity in severities]
    models = {}
    for model in result.models:
        clean_cms = result.clean[model]
        corrupted = [result.corrupted[(model, name, severity)] for name, severity in keys]
        drops = paired_bootstraps(clean_cms, corrupted, metric, n_boot=n_boot, seed=seed, alpha=alpha)
        rows = []
        for (name, severity), cms, drop in zip(keys, corrupted, drops):
            corruption, total = get_corruption(name), cms.sum(axis=0)
            rows.append({"corruption": name, "family": corruption.family, "severity": severity,
                         "parameter": corruption.level(severity), "trained": corruption.trained,
                         "miou": float(metric(total)), "iou": _terrain_ious(total, headline), "drop": drop})
        clean = float(metric(clean_cms.sum(axis=0)))
        models[model] = {"clean": clean, "clean_iou": _terrain_ious(clean_cms.sum(axis=0), headline), "rows": rows,
                         **headline_numbers(clean, rows)}
    table = {"headline": headline, "n_tiles": int(len(next(iter(result.clean.values())))), "seed": result.seed,
             "middle_severity": MIDDLE_SEVERITY, "severities": severities, "models": models,
             "corruptions": [{"name": c.name, "family": c.family, "levels": list(c.levels), "parameter": c.parameter,
                              "trained": c.trained} for c in CORRUPTIONS if c.name in corruptions],
             "families": [f for f in FAMILIES if any(get_corruption(c).family == f for c in corruptions)]}
    if result.frames is not None:
        table["frames"] = robustness_table(result.frames, headline, n_boot=n_boot, seed=seed, alpha=alpha)
    return table


def headline_numbers(clean, rows):
    """mPC (mean mIoU over rows), rPC (mPC / clean), the worst row, and the same for trained and held-out rows
    and for the middle severity alone."""
    def summary(chosen):
        if not chosen:
            return None
        mpc = float(np.mean([r["miou"] for r in chosen]))
        worst = min(chosen, key=lambda r: r["miou"])
        return {"mpc": mpc, "rpc": mpc / clean if clean else float("nan"), "n": len(chosen),
                "worst": {"corruption": worst["corruption"], "severity": worst["severity"], "miou": worst["miou"],
                          "drop": worst["drop"]["diff"]}}

    middle = [r for r in rows if r["severity"] == MIDDLE_SEVERITY]
    return {"all": summary(rows), "trained": summary([r for r in rows if r["trained"]]),
            "held_out": summary([r for r in rows if not r["trained"]]), "middle": summary(middle),
            "middle_trained": summary([r for r in middle if r["trained"]]),
            "middle_held_out": summary([r for r in middle if not r["trained"]])}
