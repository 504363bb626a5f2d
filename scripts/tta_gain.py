"""Flip test-time augmentation, measured: every served strategy of a run scored with and without it.

Scores every model ``ensemble evaluate`` scores (fusers cross-fitted over the same folds of validation
rover stops, the baseline, the control) once without TTA and once with the horizontal flip, on the
run's validation tiles, and prints the paired-bootstrap difference (flip - none) of the headline
mIoU with its 95 % interval, and what the flip costs: the wall time of ``Predictor.predict`` on the
data file's test tiles for each strategy, with and without it, in one process.

Usage: python scripts/tta_gain.py --run models/reference [--data D] [--cross-fit 5] [--seed 0] [--out tta.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble.core.data import load_data, open_npz, resolve_data_path  # noqa: E402
from ensemble.core.objectives import HEADLINE_CONVENTION  # noqa: E402
from ensemble.core.runfolder import RunFolder  # noqa: E402
from ensemble.evaluation.comparisons import tta_gains  # noqa: E402
from ensemble.evaluation.evaluate import score_models, scored_fusers  # noqa: E402
from ensemble.inference import Predictor, fitted_strategies  # noqa: E402
from ensemble.reporting.report import json_ready  # noqa: E402
from ensemble.reporting.text import text_table  # noqa: E402


def measure(run, data, cross_fit=5, seed=0, n_boot=1000, timing_tiles=None, log=None):
    """``{"rows": [{model, miou_none, miou_flip, diff, low, high, default, seconds_none, seconds_flip}], ...}``.

    The scores and gains are those ``ensemble evaluate --tta-gain`` records
    (:func:`ensemble.evaluation.evaluate.tta_gains`).
    """
    folder = RunFolder(run)
    fusers = scored_fusers(folder, fitted_strategies(run), seed)
    scores = {tta: score_models(folder, data, fusers, tta=tta, cross_fit=cross_fit, seed=seed, log=log)
              for tta in ("none", "flip")}
    headline = HEADLINE_CONVENTION[folder.objective()]
    test = open_npz(data.path, keys=("test_set",))["test_set"]
    test = test if timing_tiles is None else test[:timing_tiles]
    served = set(fitted_strategies(run)) | {"baseline", "control"}
    names = [name for name in scores["none"].tile_cms if name in served]
    rows = tta_gains(scores["none"], scores["flip"], names, headline, n_boot, seed)["rows"]
    for row in rows:
        row["seconds_none"] = row["seconds_flip"] = None
        for tta in ("none", "flip") if len(test) else ():
            predictor = Predictor(run, row["model"], tta=tta)
            started = time.perf_counter()
            predictor.predict(test)
            row[f"seconds_{tta}"] = time.perf_counter() - started
    return {"run": str(run), "headline": headline, "cross_fit": cross_fit, "seed": seed, "n_boot": n_boot,
            "timing_tiles": int(len(test)), "rows": rows}


def _seconds(value):
    return "" if value is None else f"{value:.1f}"


def format_rows(result):
    """A text table of :func:`measure`'s rows."""
    head = ["strategy", "none", "flip", "flip - none [95 %]", "served with", "predict s (none)", "predict s (flip)"]
    body = [[r["model"], f"{r['miou_none']:.4f}", f"{r['miou_flip']:.4f}",
             f"{r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]", r["default"], _seconds(r["seconds_none"]),
             _seconds(r["seconds_flip"])] for r in result["rows"]]
    return (f"mIoU {result['headline']} on the validation tiles (fusers cross-fitted over {result['cross_fit']} "
            f"folds); predict time on {result['timing_tiles']} test tiles\n" + text_table(head, body))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", default=None)
    parser.add_argument("--cross-fit", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--timing-tiles", type=int, default=None,
                        help="Test tiles to time predict on (default: all; 0: no timing).")
    parser.add_argument("--out", default=None, help="Also write the result as JSON here.")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    data = load_data(resolve_data_path(args.data))
    result = measure(args.run, data, args.cross_fit, args.seed, args.n_boot, args.timing_tiles,
                     None if args.quiet else print)
    print(format_rows(result))
    if args.out:
        Path(args.out).write_text(json.dumps(json_ready(result), indent=2))


if __name__ == "__main__":
    main()
