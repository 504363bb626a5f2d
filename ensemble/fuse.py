"""Fit fusers on the members' validation logits (tiles they never trained on) and score them."""
import time

import numpy as np
import torch

from fusion import STRATEGIES, get_fuser

from .core.classes import CLASS_NAMES, TERRAIN_CLASSES
from .core.data import load_data, tile_ids
from .core.errors import EnsembleError
from .inference import cached_val_logits
from .core.metrics import CONVENTIONS, all_mean_ious, confusion_matrix, expected_calibration_error, iou_per_class, nll
from .core.objectives import HEADLINE_CONVENTION, mask_background, predicts_background, scored_pixels
from .core.runfolder import RunFolder


def parse_strategies(spec):
    """``"all"`` or one strategy name -> list of strategy names."""
    if spec == "all":
        return list(STRATEGIES)
    if spec not in STRATEGIES:
        raise EnsembleError(f"--strategy: unknown {spec!r}; valid: all, {', '.join(STRATEGIES)}")
    return [spec]


def new_fuser(name, objective, seed=0):
    """An unfitted fuser of strategy ``name`` for ``objective`` (``seed`` for the strategies that draw numbers)."""
    kwargs = {"objective": objective} if name == "argmax" else {"seed": seed, "objective": objective}
    return get_fuser(name, **kwargs)


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


def fit_fusers(run, strategies, data=None, seed=0, stack=None, device="cpu", engine="auto", log=print):
    """Fit each strategy on the run's cached validation logits, save ``RUN/fusion/<strategy>.pt``.

    Returns ``{strategy: {"before": scores, "after": scores, "params": [lines], "seconds": s, "path": p}}``;
    ``before`` scores the plain softmax of the member logits. ``stack`` (``True``: stacked,
    ``False``: one by one, ``None``: the faster for the engine) says how a missing cache is computed; ``engine`` picks PyTorch or onnxruntime for it.
    """
    log = log or (lambda line: None)
    data_obj = load_data(data)
    folder = RunFolder(run)
    logits, ids, val_idx = cached_val_logits(run, data_obj, tile_ids(data_obj), device=device, log=log, stack=stack,
                                             engine=engine)
    masks = data_obj.masks[val_idx].astype(np.int64)
    objective = folder.objective()
    plain_logits = torch.from_numpy(np.asarray(logits))
    if not predicts_background(objective):
        plain_logits = mask_background(plain_logits)
    before = score_probs(torch.softmax(plain_logits, dim=1), masks, objective)
    del plain_logits
    results = {}
    for name in strategies:
        started = time.perf_counter()
        fuser = new_fuser(name, objective, seed).fit(logits, masks, tile_ids=[str(i) for i in ids])
        seconds = time.perf_counter() - started
        path = folder.fuser_path(name)
        fuser.save(path)
        folder.record_checksums([path])
        results[name] = {
            "before": before,
            "after": score_probs(fuser.predict_proba(logits), masks, objective),
            "params": fuser.describe(),
            "seconds": seconds,
            "path": str(path),
            "tiles": int(len(ids)),
            "objective": objective,
        }
    return results


def format_fusion_results(results):
    """Lines for the CLI: fitted parameters, NLL/ECE before and after, per-class IoU."""
    lines = []
    for name, r in results.items():
        b, a = r["before"], r["after"]
        lines.append(f"== {name}  (fitted on {r['tiles']} validation tiles in {r['seconds']:.1f}s -> {r['path']})")
        lines.extend(f"   {line}" for line in r["params"])
        lines.append(f"   NLL {b['nll']:.4f} -> {a['nll']:.4f}   ECE {b['ece']:.4f} -> {a['ece']:.4f}")
    if not results:
        return "\n".join(lines)
    objective = next(iter(results.values()))["objective"]
    header = (f"{'strategy':<12}" + "".join(f"{CLASS_NAMES[c]:>9}" for c in TERRAIN_CLASSES)
              + "".join(f"{'mIoU ' + c:>22}" for c in CONVENTIONS))
    lines += ["", f"in-sample validation IoU of the fused masks (objective {objective}; per class: "
                  f"{HEADLINE_CONVENTION[objective]} convention):", header]
    for name, r in results.items():
        a = r["after"]
        lines.append(f"{name:<12}" + "".join(f"{a['iou'][CLASS_NAMES[c]]:>9.4f}" for c in TERRAIN_CLASSES)
                     + "".join(f"{a['miou'][c]:>22.4f}" for c in CONVENTIONS))
    return "\n".join(lines)
