"""Non-integer scales, measured: validation frames resized by 1.5, and an emulated 256x256 copy, against scale 1.

The frames are the run's validation images rebuilt from their ``:top`` and ``:bottom`` tiles (128x128,
``manifest.json: split.val_indices``), predicted through the public API (``api.predictor``, the run's
served strategy and TTA unless ``--strategy`` names one). Conditions, each an 8-bit image as a saved
file would hold it:

* ``frame 128``: the frame itself at ``--scale 1`` (the reference of the next two);
* ``bicubic 192``: the frame upsampled 1.5x with PIL's bicubic filter, at ``--scale 1.5``;
* ``copy 256``: the frame upsampled 2x (bicubic), standing for AI4Mars' 256x256 copy, at ``--scale 2``
  (the reference of the next two);
* ``copy 256 -> 192 bilinear`` / ``lanczos``: that copy resized to 192x192 with PIL's (antialiased)
  bilinear or Lanczos filter, at ``--scale 1.5``.

Headline: competition mIoU (truth class 0 ignored) of the class logits at the training scale (128x128:
``Predictor.image_logits(resize=False)``) against the frames' own masks, and its difference to the
condition's reference with a 95 % paired-bootstrap interval over frames (1000 replicates, ``--seed``).
Beside it, the mIoU of the mask at the input's size (logits resized bilinearly, as ``predict`` does)
against the truth upsampled by nearest neighbour. Targets: ``bicubic 192`` within 0.01 of ``frame 128``,
each 192 copy within 0.01 of ``copy 256``.

``--compare BEFORE.json AFTER.json`` reads two ``--out`` files (two commits, say) instead and prints each
condition's paired-bootstrap difference after - before over the same frames.

Usage: python scripts/scale_check.py [--run models/reference] [--data D] [--strategy S] [--seed 0] [--limit N]
       [--quiet] [--out F.json]
       python scripts/scale_check.py --compare BEFORE.json AFTER.json [--seed 0]
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble import api  # noqa: E402
from ensemble.core.data import load_data, tile_ids  # noqa: E402
from ensemble.core.metrics import mean_iou, mean_ious, per_tile_confusion  # noqa: E402
from ensemble.evaluation.bootstrap import paired_bootstrap  # noqa: E402
from ensemble.evaluation.frames import frame_pairs  # noqa: E402
from ensemble.inference.windows import resize_logits  # noqa: E402
from fusion.base import channel_argmax  # noqa: E402

#: Within this much mIoU of its reference, a condition meets the target.
TARGET = 0.01
CONVENTION = "competition"


def _resized(image, size, method):
    """``image`` (uint8 (H, W)) resized to ``size`` (square) by PIL ``method``: uint8, as a saved file holds it."""
    return np.asarray(Image.fromarray(image).resize((size, size), method))


#: condition -> (scale, reference condition, how the 8-bit input is made from the uint8 128x128 frame).
CONDITIONS = {
    "frame 128": (1.0, None, lambda f: f),
    "bicubic 192": (1.5, "frame 128", lambda f: _resized(f, 192, Image.BICUBIC)),
    "copy 256": (2.0, "frame 128", lambda f: _resized(f, 256, Image.BICUBIC)),
    "copy 256 -> 192 bilinear": (1.5, "copy 256", lambda f: _resized(_resized(f, 256, Image.BICUBIC), 192,
                                                                       Image.BILINEAR)),
    "copy 256 -> 192 lanczos": (1.5, "copy 256", lambda f: _resized(_resized(f, 256, Image.BICUBIC), 192,
                                                                      Image.LANCZOS)),
}


def validation_frames(run, data, limit=None):
    """``(frames uint8 (F, 128, 128), truth uint8 (F, 128, 128))``: the run's validation images from their two tiles."""
    val = np.asarray(json.loads((Path(run) / "manifest.json").read_text())["split"]["val_indices"])
    pairs = frame_pairs(tile_ids(data)[val])[:limit]
    images, masks = data.images[val], data.masks[val]
    frames = np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=1)
    truth = np.concatenate([masks[pairs[:, 0]], masks[pairs[:, 1]]], axis=1)
    return np.round(frames * 255).astype(np.uint8), truth


def _nearest(masks, size):
    return np.stack([_resized(m, size, Image.NEAREST) for m in masks])


def score_condition(predictor, frames, truth, make):
    """``(per-frame matrices at the training scale, at the input's size)`` of ``predictor`` on ``make(frame)``."""
    at_training, at_input, inputs = [], [], []
    for frame in frames:
        image = make(frame)
        logits, _ = predictor.image_logits(image.astype(np.float32) / 255, members=False, resize=False)
        at_training.append(channel_argmax(logits)[0].to(torch.uint8).numpy())
        at_input.append(channel_argmax(resize_logits(logits, image.shape))[0].to(torch.uint8).numpy())
        inputs.append(image.shape[0])
    size = inputs[0]
    big_truth = truth if size == truth.shape[1] else _nearest(truth, size)
    return per_tile_confusion(truth, np.stack(at_training)), per_tile_confusion(big_truth, np.stack(at_input)), size


def measure(run, data, strategy=None, seed=0, limit=None, log=None):
    """``{"rows": [{condition, input, scale, miou, miou_at_input, reference, diff, low, high, met}],
    "frame_cms": {condition: per-frame matrices at the training scale (F, 5, 5)}, ...}``."""
    frames, truth = validation_frames(run, data, limit)
    said = io.StringIO()
    predictors = {}
    rows, cms = [], {}
    for name, (scale, reference, make) in CONDITIONS.items():
        if scale not in predictors:
            with contextlib.redirect_stderr(said):  # the served strategy and TTA, said once below
                predictors[scale] = api.predictor(run, strategy, scale=scale)
        predictor = predictors[scale]
        started = time.perf_counter()
        cms[name], cm_input, size = score_condition(predictor, frames, truth, make)
        row = {"condition": name, "input": size, "scale": scale, "miou": mean_iou(cms[name].sum(0), CONVENTION),
               "miou_at_input": mean_iou(cm_input.sum(0), CONVENTION), "reference": reference}
        if reference is not None:
            diff = paired_bootstrap(cms[reference], cms[name], lambda cms: mean_ious(cms, CONVENTION), seed=seed)
            row.update(diff, met=abs(diff["diff"]) <= TARGET)
        rows.append(row)
        if log:
            log(f"{name}: mIoU {row['miou']:.4f} ({len(frames)} frames, {time.perf_counter() - started:.0f} s)")
    predictor = predictors[1.0]
    return {"run": str(run), "strategy": predictor.strategy, "tta": predictor.tta, "frames": int(len(frames)),
            "seed": seed, "convention": CONVENTION, "target": TARGET, "rows": rows, "said": said.getvalue().strip(),
            "frame_cms": cms}


def format_rows(result):
    """A markdown table of :func:`measure`'s rows."""
    lines = ["| condition | input | scale | mIoU (128 grid) | reference | difference [95 %] | target | "
             "mIoU (input grid) |", "|---|---:|---:|---:|---|---|---|---:|"]
    for r in result["rows"]:
        diff = "" if r["reference"] is None else f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
        met = "" if r["reference"] is None else ("met" if r["met"] else "missed")
        lines.append(f"| {r['condition']} | {r['input']} | {r['scale']:g} | {r['miou']:.3f} | {r['reference'] or ''} "
                     f"| {diff} | {met} | {r['miou_at_input']:.3f} |")
    return "\n".join(lines)


def compare(before, after, seed=0):
    """A markdown table: per condition the mIoU of two ``--out`` files (two commits, say) on the same frames and
    the paired-bootstrap difference ``after - before`` with its 95 % interval."""
    runs = [json.loads(Path(path).read_text()) for path in (before, after)]
    if runs[0]["frames"] != runs[1]["frames"]:
        raise SystemExit(f"--compare: {before} holds {runs[0]['frames']} frames, {after} {runs[1]['frames']}")
    lines = [f"| condition | {before} | {after} | difference [95 %] |", "|---|---:|---:|---|"]
    for name in runs[1]["frame_cms"]:
        a, b = (np.asarray(r["frame_cms"][name]) for r in runs)
        diff = paired_bootstrap(a, b, lambda cms: mean_ious(cms, CONVENTION), seed=seed)
        lines.append(f"| {name} | {mean_iou(a.sum(0), CONVENTION):.3f} | {mean_iou(b.sum(0), CONVENTION):.3f} "
                     f"| {diff['diff']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] |")
    return "\n".join(lines)


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="models/reference")
    parser.add_argument("--data", default=None)
    parser.add_argument("--strategy", default=None, help="default: the run's served strategy")
    parser.add_argument("--seed", type=int, default=0, help="of the paired bootstrap")
    parser.add_argument("--limit", type=_positive, default=None, help="score only the first N frames (a quick check)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.add_argument("--out", default=None, help="also write the result as JSON, with the per-frame matrices")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE.json", "AFTER.json"), default=None,
                        help="only compare two --out files frame by frame (after - before)")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*args.compare, seed=args.seed))
        return
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    result = measure(args.run, load_data(args.data), args.strategy, args.seed, args.limit, log)
    if log and result["said"]:
        log(result["said"])
    print(f"{args.run}, strategy {result['strategy']}, tta {result['tta']}, {result['frames']} validation frames, "
          f"{CONVENTION} mIoU, target |difference| <= {TARGET}")
    print(format_rows(result))
    if args.out:
        result["frame_cms"] = {name: cms.tolist() for name, cms in result["frame_cms"].items()}
        Path(args.out).write_text(json.dumps(result, default=float) + "\n")


if __name__ == "__main__":
    main()
