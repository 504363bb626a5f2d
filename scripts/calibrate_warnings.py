"""How often predict's input check fires: on clean validation tiles and frames, under every corruption of the
robustness benchmark, and on images given at a wrong ``--scale``.

The thresholds are those :data:`ensemble.core.imagestats.RULES` derive from the run's training tiles (what
``RUN/input_stats.json`` holds when written with today's rules). Each validation tile is checked as
``predict`` checks it: at the training scale (a resampled tile brought back by ``--scale`` of its
corruption). The sets:

* clean: the validation tiles, and the 128x128 validation frames (each image's ``:top`` over its ``:bottom``
  tile, at ``--scale 1``): the check should fire on under 2 % of them;
* every corruption and severity of :data:`ensemble.core.corruptions.CORRUPTIONS` (seed ``--seed``, as
  ``ensemble evaluate --robustness``): with ``--report`` (a ``report.json`` of ``ensemble evaluate
  --robustness``) each pair's mIoU drop for the served model (``--model``, default the report's best
  strategy); the target is a firing rate of at least 90 % wherever the drop exceeds 0.05;
* a wrong ``--scale``: a tile given with ``--scale 2`` as if it were 2x larger, a tile enlarged 2x (Pillow,
  bilinear) given with ``--scale 1``, and the same for the frames;
* the data file's test tiles (no masks: how often a user predicting them is warned).

``--overhead`` instead times ``ensemble predict --strategy baseline`` on the data file's test tiles with
and without the check (``api.predict(check_inputs=...)``, alternately, in turn first, ``--repeats`` times
each after a warm-up), and the check alone (``Predictor.check`` over the same tiles in batches of 16).

    python scripts/calibrate_warnings.py --run models/reference --report /tmp/rob/ref/report.json
    python scripts/calibrate_warnings.py --run models/reference --overhead
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ensemble.core.corruptions import CORRUPTIONS, SEVERITIES
from ensemble.core.data import load_data, resolve_data_path, tile_ids
from ensemble.core.imagestats import STATISTICS, InputRange, image_statistics, training_statistics
from ensemble.core.runfolder import RunFolder
from ensemble.evaluation.frames import frame_pairs
from ensemble.evaluation.robustness import corrupted_tiles
from ensemble.inference.windows import as_image_tensor, to_training_scale

#: A corruption costing more than this mIoU must be flagged on at least TARGET_FIRES of its tiles.
COSTLY = 0.05
TARGET_FIRES = 0.90
#: The clean tiles and frames may be flagged at most this often.
TARGET_CLEAN = 0.02


def enlarged(images, factor=2):
    """Each image (H, W) float 0-1 resized ``factor`` x by Pillow's bilinear filter on its 8-bit values."""
    out = []
    for image in images:
        pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        resized = pixels.resize((image.shape[1] * factor, image.shape[0] * factor), Image.BILINEAR)
        out.append(np.asarray(resized, dtype=np.float32) / 255)
    return out


def stats_at_scale(images, scale, tile_shape):
    """:func:`image_statistics` of each image brought to the training scale at ``scale``, as ``predict`` does."""
    parts = [image_statistics(to_training_scale(as_image_tensor(image), scale).numpy(), tile_shape)
             for image in images]
    return {name: np.concatenate([p[name] for p in parts]) for name in STATISTICS}


def benchmark_sets(images, frames, tile_shape, seed=0, test_tiles=None):
    """Yield ``(corruption, severity, statistics, scale)`` of every set (see the module docstring), and of the
    data file's ``test_tiles`` when given."""
    yield "clean tiles", "", image_statistics(images, tile_shape), 1.0
    yield "clean frames", "", image_statistics(frames, tile_shape), 1.0
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            tiles = corrupted_tiles(images, corruption.name, severity, seed)
            yield corruption.name, severity, image_statistics(tiles, tile_shape), corruption.scale(severity)
    yield "tile at --scale 2", "", stats_at_scale(images, 2.0, tile_shape), 2.0
    yield "tile enlarged 2x, --scale 1", "", stats_at_scale(enlarged(images), 1.0, tile_shape), 1.0
    yield "frame at --scale 2", "", stats_at_scale(frames, 2.0, tile_shape), 2.0
    yield "frame enlarged 2x, --scale 1", "", stats_at_scale(enlarged(frames), 1.0, tile_shape), 1.0
    if test_tiles is not None and len(test_tiles):
        yield "test tiles of the data file", "", image_statistics(test_tiles, tile_shape), 1.0


def firing(input_range, stats, scale):
    """``(share of images flagged, {statistic: share of images it flags})``."""
    checks = input_range.check(stats, scale)
    flagged = [c for c in checks if not c.ok]
    by_stat = {}
    for check in flagged:
        for finding in check.findings:
            key = f"{finding.statistic} {finding.side}"
            by_stat[key] = by_stat.get(key, 0) + 1
    n = max(len(checks), 1)
    return len(flagged) / n, {k: v / n for k, v in sorted(by_stat.items(), key=lambda kv: -kv[1])}


def model_drops(report_path, model=None):
    """``(model, {(corruption, severity): clean mIoU - corrupted mIoU})`` of the served model in a robustness report."""
    import json

    table = json.loads(Path(report_path).read_text())["table"]
    robustness = table["robustness"]["models"]
    model = model or (table.get("best_strategy") if table.get("best_strategy") in robustness
                      else next(iter(robustness)))
    rows = robustness[model]
    return model, {(r["corruption"], r["severity"]): rows["clean"] - r["miou"] for r in rows["rows"]}


def calibration(run, data_path=None, seed=0):
    """``(rows, InputRange)``: one row per set, ``{corruption, severity, fires, by_statistic}``."""
    folder = RunFolder(run)
    data = load_data(resolve_data_path(data_path))
    split = folder.manifest()["split"]
    train_idx = np.asarray(split["train_indices"], dtype=np.int64)
    val_idx = np.asarray(split["val_indices"], dtype=np.int64)
    input_range = InputRange(training_statistics(data.images, data.tile_shape, train_idx))
    images = data.images[val_idx]
    pairs = frame_pairs(tile_ids(data)[val_idx])
    frames = np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=1)
    rows = []
    for name, severity, stats, scale in benchmark_sets(images, frames, data.tile_shape, seed, data.test_images):
        fires, by_stat = firing(input_range, stats, scale)
        rows.append({"corruption": name, "severity": severity, "fires": fires, "by_statistic": by_stat,
                     "n": len(stats["noise"])})
    return rows, input_range


def overhead(run, data_path=None, repeats=3):
    """Median seconds of ``api.predict(strategy="baseline")`` on the test tiles without and with the check, and of
    the check alone (``Predictor.check`` in the predictor's batches)."""
    from ensemble import api
    from ensemble.core.data import open_npz

    tiles = open_npz(resolve_data_path(data_path), keys=("test_set",))["test_set"]
    predictor = api.predictor(run, "baseline", engine="torch")
    alone = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(tiles), predictor.batch_size):
            predictor.check(tiles[start : start + predictor.batch_size])
        alone.append(time.perf_counter() - started)
    seconds = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "submission.csv"
        api.predict(run, strategy="baseline", data=data_path, out=out, quiet=True)  # warm-up: graphs, caches
        for repeat in range(repeats):
            for check in (False, True) if repeat % 2 == 0 else (True, False):  # neither always runs second
                started = time.perf_counter()
                api.predict(run, strategy="baseline", data=data_path, out=out, quiet=True, check_inputs=check)
                seconds[check].append(time.perf_counter() - started)
    return statistics.median(seconds[False]), statistics.median(seconds[True]), statistics.median(alone)


def _percent(share):
    return f"{100 * share:.1f} %"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="models/reference")
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=0, help="the corruptions' seed (as evaluate --robustness)")
    parser.add_argument("--report", default=None, help="report.json of ensemble evaluate --robustness: mIoU drops")
    parser.add_argument("--model", default=None, help="the model of the report [default: its best strategy]")
    parser.add_argument("--overhead", action="store_true", help="time predict with and without the check instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.overhead:
        without, with_check, alone = overhead(args.run, args.data, args.repeats)
        print(f"predict --strategy baseline on the test tiles (median of {args.repeats}): {without:.2f} s without "
              f"the check, {with_check:.2f} s with it (x{with_check / without:.3f}); the check alone "
              f"{alone:.3f} s")
        return
    model, drops = model_drops(args.report, args.model) if args.report else (None, {})
    rows, _ = calibration(args.run, args.data, args.seed)
    drop_head = f" {model} mIoU drop |" if model else ""
    print(f"| set | severity |{drop_head} fires | statistics that fire |")
    print(f"|---|---|{'---|' if model else ''}---|---|")
    missed = []
    for row in rows:
        drop = drops.get((row["corruption"], row["severity"]))
        cell = "" if not model else (" |" if drop is None else f" {drop:+.3f} |")
        stats = ", ".join(f"{k} {_percent(v)}" for k, v in list(row["by_statistic"].items())[:3])
        print(f"| {row['corruption']} | {row['severity']} |{cell} {_percent(row['fires'])} | {stats} |")
        if drop is not None and drop > COSTLY and row["fires"] < TARGET_FIRES:
            missed.append(f"{row['corruption']} {row['severity']} (drop {drop:.3f}, fires {_percent(row['fires'])})")
    clean = {r["corruption"]: r["fires"] for r in rows if r["corruption"].startswith("clean")}
    print()
    print("clean: " + ", ".join(f"{k} {_percent(v)}" for k, v in clean.items())
          + f" (target under {_percent(TARGET_CLEAN)})")
    if model:
        costly = sum(1 for d in drops.values() if d > COSTLY)
        print(f"pairs costing {model} more than {COSTLY} mIoU: {costly}; flagged on under "
              f"{_percent(TARGET_FIRES)} of their tiles: {len(missed)}" + (": " + "; ".join(missed) if missed else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
