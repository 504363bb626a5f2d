"""Fit fusers on the validation logits of the run's networks (tiles they never trained on) and score them."""
import time

import numpy as np
import torch

from fusion import FUSERS, STRATEGIES, new_fuser
from fusion.base import _as_tensor

from .core.classes import BASELINE, CLASS_NAMES, STUDENT, TERRAIN_CLASSES, is_baseline_replica
from .core.data import load_data
from .core.errors import EnsembleError
from .core.logs import line_logger
from .core.metrics import all_mean_ious, confusion_matrix, expected_calibration_error, iou_per_class, nll
from .core.objectives import HEADLINE_CONVENTION, mask_background, predicts_background, scored_pixels
from .core.runfolder import RunFolder
from .inference import MEMBERS, available_sources, check_run_data, fuser_inputs, source_logits

_log_line = line_logger(__name__)  # where progress lines go when the caller gives no log


def parse_strategies(spec):
    """``"all"`` or one strategy name -> list of strategy names."""
    if spec == "all":
        return list(STRATEGIES)
    if spec not in STRATEGIES:
        raise EnsembleError(f"--strategy: unknown {spec!r}; valid: all, {', '.join(STRATEGIES)}")
    return [spec]


def score_probs(probs, masks, objective):
    """NLL, ECE (15 bins), per-class IoU and the mean IoU of every convention of probabilities (N, 5, H, W).

    NLL, ECE and per-class IoU are taken on the pixels ``objective`` is scored on (labeled
    ones for ``competition``); per-class IoU in its headline convention.
    """
    pred = probs.argmax(1).numpy() if isinstance(probs, torch.Tensor) else probs.argmax(1)
    cm = confusion_matrix(masks, pred)
    valid = scored_pixels(masks, objective)
    iou = iou_per_class(cm, HEADLINE_CONVENTION[objective])
    return {
        "nll": nll(probs, masks, valid=valid),
        "ece": expected_calibration_error(probs, masks, valid=valid),
        "iou": {CLASS_NAMES[c]: float(iou[c]) for c in TERRAIN_CLASSES},
        "miou": all_mean_ious(cm),
    }


def missing_sources(folder, strategy):
    """The sources ``strategy`` reads that ``folder`` has not trained, in order.

    The members are left to their loader, whose error names the member that is missing.
    """
    available = available_sources(folder)
    return [source for source in FUSERS[strategy].sources if source != MEMBERS and source not in available]


def how_to_train(folder, source):
    """The command that trains ``source`` into ``folder``."""
    if source == MEMBERS:
        return f"ensemble train --run {folder.path}"
    if source == BASELINE:
        return f"ensemble baseline --run {folder.path}"
    if is_baseline_replica(source):
        return f"ensemble baseline --run {folder.path} --replicas {int(source.rpartition('_')[2]) + 1}"
    if source == STUDENT:
        return f"ensemble distill --run {folder.path}"
    return f"ensemble control --run {folder.path}"


def plan_strategies(folder, strategies, explicit, log):
    """``strategies`` whose sources the run has; a missing source is an error when one was asked by name."""
    kept = []
    for name in strategies:
        missing = missing_sources(folder, name)
        if not missing:
            kept.append(name)
            continue
        needs = "; ".join(f"{source} ({how_to_train(folder, source)})" for source in missing)
        if explicit:
            raise EnsembleError(f"--strategy {name}: {folder.path} lacks {needs}")
        log(f"skipping {name}: it needs {needs}")
    return kept


def fit_fusers(run, strategies, *, data=None, seed=0, options=None, log=_log_line, explicit=None):
    """Fit each strategy on the run's cached validation logits, save ``RUN/fusion/<strategy>.pt``.

    Returns ``{strategy: {"before": scores, "after": scores, "params": [lines], "seconds": s, "path": p}}``;
    ``before`` scores the plain softmax of the strategy's first source (the member logits for the
    member-level fusers). A strategy whose sources the run lacks is skipped with a log line, or
    refused when it was asked by name (``explicit``, default: when one strategy is asked). ``options``
    (:class:`~ensemble.inference.options.InferenceOptions`: device, engine, layout, batch size) say how a
    missing cache is computed.
    """
    log = log or (lambda line: None)
    folder = RunFolder(run)
    folder.check_writable("fit fusers")
    data_obj = load_data(data)
    check_run_data(folder, data_obj)
    strategies = plan_strategies(folder, strategies, len(strategies) == 1 if explicit is None else explicit, log)
    sources = list(dict.fromkeys(source for name in strategies for source in FUSERS[name].sources))
    logits, ids, val_idx = source_logits(folder, data_obj, sources, options=options, log=log)
    if val_idx is None:
        return {}
    masks = data_obj.masks[val_idx].astype(np.int64)
    objective = folder.objective()
    before = {}
    results = {}
    for name in strategies:
        first = FUSERS[name].sources[0]
        if first not in before:
            plain_logits = _as_tensor(logits[first]).clone()  # a read-only cache: masked on a copy
            if not predicts_background(objective):
                plain_logits = mask_background(plain_logits)
            before[first] = score_probs(torch.softmax(plain_logits, dim=1), masks, objective)
            del plain_logits
        inputs = fuser_inputs(logits, FUSERS[name].sources)
        started = time.perf_counter()
        fuser = new_fuser(name, objective, seed).fit(inputs, masks, tile_ids=[str(i) for i in ids])
        seconds = time.perf_counter() - started
        path = folder.fuser_path(name)
        fuser.save(path)
        folder.record_checksums([path])
        results[name] = {
            "before": before[first],
            "before_source": first,
            "after": score_probs(fuser.predict_proba(inputs), masks, objective),
            "params": fuser.describe(),
            "seconds": seconds,
            "path": str(path),
            "tiles": int(len(ids)),
            "objective": objective,
        }
        del inputs
    return results
