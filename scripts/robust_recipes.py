"""Compare training recipes for robustness at a reduced budget, on the multiclass baseline.

For each recipe (a name and ``--set`` values), the baseline is trained for ``--epochs`` epochs of the full
preset on the same split and seed (``runs/recipes/<name>-e<epochs>``, resumed if cut), then scored on the
validation tiles clean and under every corruption of the robustness benchmark
(:mod:`ensemble.evaluation.robustness`). Prints per recipe: clean mIoU, mPC, mPC of the trained and held-out
corruptions, mPC at severity 2, the worst corruption at severity 2, and the mean seconds of a training epoch;
writes ``robustness.json`` into each run folder.

    python scripts/robust_recipes.py --epochs 4 flips:augment.degrade=0 degrade60:augment.degrade=0.6

A recipe is ``NAME:SETTING[,SETTING...]`` (``NAME:`` alone for the default recipe).
"""
import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ensemble import api
from ensemble.core.classes import BASELINE
from ensemble.core.data import load_data, resolve_data_path, tile_ids
from ensemble.core.fileio import write_json_atomic
from ensemble.core.metrics import per_tile_confusion
from ensemble.core.objectives import HEADLINE_CONVENTION
from ensemble.core.runfolder import RunFolder
from ensemble.evaluation.robustness import Benchmark, CleanSet, robustness_scores, robustness_table
from ensemble.inference import InferenceOptions, Predictor
from ensemble.reporting.text import format_robustness


def parse_recipe(text):
    name, _, settings = text.partition(":")
    return name, [s for s in settings.split(",") if s]


def benchmark_scores(run, data, *, model=BASELINE, seed, corruptions, severities, log):
    """The :class:`~ensemble.evaluation.robustness.RobustnessScores` of one plain network of the run (the
    baseline, or the student) on its validation tiles, clean and under the corruptions at ``severities``."""
    folder = RunFolder(run)
    val_idx = np.asarray(folder.manifest()["split"]["val_indices"], dtype=np.int64)
    images, truth = data.images[val_idx], data.masks[val_idx]
    options = InferenceOptions(engine="torch")
    clean = Predictor(run, model, options=options).predict(images)
    scores = SimpleNamespace(truth=truth, ids=tile_ids(data)[val_idx],
                             tile_cms={model: per_tile_confusion(truth, clean)})
    return robustness_scores(folder, CleanSet(images=images, scores=scores), {}, models=[model], options=options,
                             benchmark=Benchmark(corruptions=corruptions, severities=severities, seed=seed), log=log)


def score_recipe(run, data, *, model=BASELINE, seed, corruptions, severities, log):
    """Clean and corrupted scores of one plain network of the run on its validation tiles: the robustness table."""
    result = benchmark_scores(run, data, model=model, seed=seed, corruptions=corruptions, severities=severities,
                              log=log)
    return robustness_table(result, HEADLINE_CONVENTION[RunFolder(run).objective()], seed=seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="NAME:SETTING,... (--set values)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corruptions", default=None, help="comma-separated names [default: all]")
    parser.add_argument("--severities", default="1,2,3", help="comma-separated severities [default: all three]")
    parser.add_argument("--root", default="runs/recipes")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    log = None if args.quiet else print
    data = load_data(resolve_data_path(args.data))
    corruptions = args.corruptions.split(",") if args.corruptions else None
    lines = []
    for text in args.recipes:
        name, settings = parse_recipe(text)
        run = Path(args.root) / f"{name}-e{args.epochs}"
        metrics = api.baseline(data=str(data.path), run=str(run), preset="full", epochs=args.epochs, seed=args.seed,
                               overrides=settings, quiet=args.quiet)
        table = score_recipe(run, data, seed=args.seed, corruptions=corruptions,
                             severities=[int(s) for s in args.severities.split(",")], log=log)
        table["recipe"] = {"name": name, "settings": settings, "epochs": args.epochs}
        epochs = metrics.get("history", [])
        table["epoch_seconds"] = float(np.mean([h["seconds"] for h in epochs])) if epochs else None
        write_json_atomic(run / "robustness.json", table)
        entry = table["models"][BASELINE]
        lines.append(f"{name:14s} clean {entry['clean']:.3f}  mPC {entry['all']['mpc']:.3f}  "
                     f"trained {entry['trained']['mpc']:.3f}  held-out "
                     f"{entry['held_out']['mpc'] if entry['held_out'] else float('nan'):.3f}  worst "
                     f"{entry['all']['worst']['corruption']} {entry['all']['worst']['severity']} "
                     f"{entry['all']['worst']['miou']:.3f}  epoch {table['epoch_seconds'] or 0:.0f}s  "
                     f"({','.join(settings) or 'default'})")
        if log:
            print(format_robustness(table))
        print(lines[-1], flush=True)
    print("\n".join(["", f"recipes at {args.epochs} epochs (baseline, validation tiles, seed {args.seed}):", *lines]))


if __name__ == "__main__":
    main()
