"""Fit fusers on the members' validation logits (tiles they never trained on) and score them."""
import time

import numpy as np
import torch

from fusion import STRATEGIES, get_fuser

from .classes import CLASS_NAMES
from .data import load_data, tile_ids
from .errors import EnsembleError
from .inference import cached_val_logits
from .metrics import confusion_matrix, expected_calibration_error, iou_per_class, mean_iou, nll
from .runfolder import RunFolder


def parse_strategies(spec):
    """``"all"`` or one strategy name -> list of strategy names."""
    if spec == "all":
        return list(STRATEGIES)
    if spec not in STRATEGIES:
        raise EnsembleError(f"--strategy: unknown {spec!r}; valid: all, {', '.join(STRATEGIES)}")
    return [spec]


def score_probs(probs, masks):
    """NLL, ECE (15 bins) and per-class / mean IoU (kaggle convention) of probabilities (N, 5, H, W)."""
    pred = probs.argmax(1).numpy() if isinstance(probs, torch.Tensor) else probs.argmax(1)
    cm = confusion_matrix(masks, pred)
    return {
        "nll": nll(probs, masks),
        "ece": expected_calibration_error(probs, masks),
        "iou": {CLASS_NAMES[c]: float(v) for c, v in enumerate(iou_per_class(cm)) if c > 0},
        "miou_kaggle": mean_iou(cm, "kaggle"),
        "miou_labeled": mean_iou(cm, "labeled"),
    }


def fit_fusers(run, strategies, data=None, seed=0, stack=True, log=print):
    """Fit each strategy on the run's cached validation logits, save ``RUN/fusion/<strategy>.pt``.

    Returns ``{strategy: {"before": scores, "after": scores, "params": [lines], "seconds": s, "path": p}}``;
    ``before`` scores the plain softmax of the member logits. ``stack=False`` computes a
    missing cache with the members one by one.
    """
    log = log or (lambda line: None)
    data_obj = load_data(data)
    folder = RunFolder(run)
    logits, ids, val_idx = cached_val_logits(run, data_obj, tile_ids(data_obj), log=log, stack=stack)
    masks = data_obj.masks[val_idx].astype(np.int64)
    before = score_probs(torch.softmax(torch.from_numpy(np.asarray(logits)), dim=1), masks)
    results = {}
    for name in strategies:
        started = time.perf_counter()
        kwargs = {} if name == "argmax" else {"seed": seed}
        fuser = get_fuser(name, **kwargs).fit(logits, masks, tile_ids=[str(i) for i in ids])
        seconds = time.perf_counter() - started
        path = folder.fusion_dir / f"{name}.pt"
        fuser.save(path)
        folder.record_checksums([path])
        results[name] = {
            "before": before,
            "after": score_probs(fuser.predict_proba(logits), masks),
            "params": fuser.describe(),
            "seconds": seconds,
            "path": str(path),
            "tiles": int(len(ids)),
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
    header = f"{'strategy':<12}" + "".join(f"{c:>9}" for c in CLASS_NAMES[1:]) + f"{'mIoU':>8}{'mIoU-lab':>10}"
    lines += ["", "validation IoU (kaggle convention) of the fused masks:", header]
    for name, r in results.items():
        a = r["after"]
        lines.append(f"{name:<12}" + "".join(f"{a['iou'][c]:>9.4f}" for c in CLASS_NAMES[1:])
                     + f"{a['miou_kaggle']:>8.4f}{a['miou_labeled']:>10.4f}")
    return "\n".join(lines)
