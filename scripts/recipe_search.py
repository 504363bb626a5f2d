"""Recipe search and seed robustness: train members and baseline under several recipes or
seeds at a reduced budget, compare.

Every (variant, seed) is a whole ``ensemble run`` (members, matched baseline, optionally the
ensembling control, every fuser, cross-fitted evaluation on the validation split; ``test_set`` is
never scored) into ``OUT/<variant>`` (``OUT/<variant>-seed<S>`` with several seeds). The search
variants give every searched setting explicitly by ``--set``, so each row's command stays valid
when the presets change; ``full`` is the ``full`` preset's own recipe. A network whose training
config is identical to one already finished in an earlier run of the study (same data, split and
seed) is copied instead of retrained. Results go to ``OUT/study.md`` and ``OUT/study.json``; a
finished run is not run again, an interrupted one continues.

Usage:
  python scripts/recipe_search.py [--out runs/search] [--epochs 6] [--samples-per-epoch 3200]
                                  [--jobs 2] [--seeds 0] [--variants today,cosine,...] [--control]
  python scripts/recipe_search.py --out runs/robust --variants full --seeds 0,1,2 --control
  (add --rescore to re-evaluate finished runs with the current code, e.g. for the bias-tuned baseline)
"""
import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ensemble import api  # noqa: E402
from ensemble.core.classes import BASELINE, CLASS_NAMES, TUNED_BASELINE, control_names  # noqa: E402
from ensemble.core.data import load_data  # noqa: E402
from ensemble.core.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from ensemble.core.runfolder import METRICS, RunFolder  # noqa: E402
from ensemble.recipe import TrainOptions  # noqa: E402
from ensemble.train import plan_training, recorded_config  # noqa: E402

#: The first recipe the search compares against (variant ``today``), every searched setting explicit.
FIRST_RECIPE = [
    "schedule=cosine_epoch", "warmup_epochs=0", "min_lr_ratio=0.05", "patience=4", "ema_decay=0",
    "weight_decay=0.0001", "model.dropout=0", "augment.hflip=true", "augment.rotate_degrees=10",
    "augment.zoom_min_scale=0.8", "augment.degrade=0", "batch_size=32", "lr=0.002", "members:sampler_weight=1",
    "big_rock:sampler_weight=4", "baseline:sampler_weight=1", "snapshot_fractions=[]",
]
#: Warm-up then cosine to zero, stepped every batch, no early stopping.
COSINE = ["schedule=cosine", "warmup_epochs=0.25", "min_lr_ratio=0", "patience=0"]

#: Horizontal flips only: rotation and zoom resample (blur) the training tiles, and the batch-norm statistics
#: learnt on them misfit sharp validation tiles (README, Recipe search).
FLIPS = ["augment.rotate_degrees=0", "augment.zoom_min_scale=1"]

#: name -> (what changed, overrides on the ``full`` preset). The search: one factor at a time, first against
#: ``cosine``, then (after flips won by far) against ``cosine_flips``.
VARIANTS = {
    "today": ("first recipe: cosine per epoch to 0.05 lr, early stopping (patience 4), flip+rotate+zoom", FIRST_RECIPE),
    "cosine": ("warm-up 1/4 epoch, then cosine per step to 0; no early stopping", FIRST_RECIPE + COSINE),
    "cosine_flips": ("cosine + horizontal flips only (no rotation, no zoom)", FIRST_RECIPE + COSINE + FLIPS),
    "flips_bigrock": ("cosine_flips + baseline oversamples big-rock tiles x4 like the big-rock member",
                      FIRST_RECIPE + COSINE + FLIPS + ["baseline:sampler_weight=4"]),
    "flips_ema": ("cosine_flips + EMA of the weights (decay 0.995) validated and kept",
                  FIRST_RECIPE + COSINE + FLIPS + ["ema_decay=0.995"]),
    "today_flips": ("first recipe's schedule and early stopping + flips only", FIRST_RECIPE + FLIPS),
    "flips_reg": ("cosine_flips + dropout 0.1 + weight decay 0.01",
                  FIRST_RECIPE + COSINE + FLIPS + ["model.dropout=0.1", "weight_decay=0.01"]),
    "full": ("the full preset's recipe (members/presets.py)", []),
}


def run_name(name, seed, args):
    """Folder name of one (variant, seed) run inside ``--out``."""
    return name if len(args.seeds) == 1 else f"{name}-seed{seed}"


def variant_command(name, seed, args):
    """The ``ensemble run`` command that trains and evaluates variant ``name`` with ``seed``."""
    words = ["ensemble", "run", "--preset", "full", "--run", f"{args.out}/{run_name(name, seed, args)}",
             "--epochs", str(args.epochs), "--samples-per-epoch", str(args.samples_per_epoch), "--jobs",
             str(args.jobs), "--seed", str(seed)]
    for item in VARIANTS[name][1]:
        words += ["--set", item]
    return shlex.join(words + (["--control"] if args.control else []))


def reuse_finished(run, earlier):
    """Copy into ``run`` every finished network whose config equals one in an ``earlier`` run folder."""
    config = RunFolder(run).config()
    reused = []
    for name, wanted in config["networks"].items():
        target = RunFolder(run).network_dir(name)
        if (target / METRICS).exists():
            continue
        for other in earlier:
            folder = RunFolder(other)
            if not folder.config_path.exists():
                continue
            other_config = folder.config()
            source = folder.network_dir(name)
            recorded = other_config["networks"].get(name)
            if recorded is not None:  # keys an older version did not write: the values it trained with
                recorded = recorded_config(name, recorded).to_dict()
            if (other_config["settings"] == config["settings"] and recorded == wanted
                    and (source / METRICS).exists() and json.loads((source / METRICS).read_text()).get("finished")):
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(source, target)
                reused.append(f"{name} from {other}")
                break
    return reused


def summarize(run):
    """The row of one finished run from its ``evaluation/report.json``."""
    table = json.loads((Path(run) / "evaluation" / "report.json").read_text())["table"]
    models, diff = table["models"], table["differences"]
    row = {"baseline": models["baseline"]["miou"]["competition"],
           "baseline_big_rock": models["baseline"]["iou"]["big_rock"]}
    for model in ("calibrated", "learned", "control", TUNED_BASELINE):
        if model in models:
            row[model] = models[model]["miou"]["competition"]
            row[f"{model}_big_rock"] = models[model]["iou"]["big_rock"]
            d = diff[model]["miou_competition"]
            row[f"{model}_diff"] = [d["diff"], d["low"], d["high"]]
    if "learned" in table.get("tuned_differences", {}):  # evaluated with the bias-tuned baseline
        d = table["tuned_differences"]["learned"]["miou_competition"]
        row["learned_tuned_diff"] = [d["diff"], d["low"], d["high"]]
    metrics = [json.loads(p.read_text()) for p in sorted(Path(run).glob(f"*/*/{METRICS}"))]
    metrics += [json.loads(p.read_text()) for p in sorted(Path(run).glob(f"*/{METRICS}"))]
    row["train_seconds"] = {m["name"]: round(m["seconds"], 1) for m in metrics}
    return row


def _diff(d):
    return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"


def format_markdown(results, args):
    """The study's table (one row per run), the spread of learned - baseline over seeds, and the commands."""
    control = any("control" in r for r in results.values())
    tuned = any("learned_tuned_diff" in r for r in results.values())
    lines = [
        f"Validation split, competition metric, {args.epochs} epochs x {args.samples_per_epoch} tiles per network; "
        "fusers cross-fitted; 95 % paired bootstrap interval over tiles.", "",
        "| run | what changed | seed | baseline mIoU | learned mIoU | learned - baseline [95 % CI] | calibrated mIoU "
        + ("| control mIoU | control - baseline " if control else "")
        + (f"| {TUNED_BASELINE} mIoU | learned - {TUNED_BASELINE} " if tuned else "")
        + "| big rock: baseline / learned |",
        "|---|---|---:|---:|---:|---|---:|" + ("---:|---|" if control else "") + ("---:|---|" if tuned else "")
        + "---|",
    ]
    for key, row in results.items():
        extra = f"{row['control']:.3f} | {_diff(row['control_diff'])} | " if control and "control" in row else (
            " | | " if control else "")
        if tuned:
            extra += (f"{row[TUNED_BASELINE]:.3f} | {_diff(row['learned_tuned_diff'])} | "
                      if "learned_tuned_diff" in row else " | | ")
        lines.append(f"| `{key}` | {VARIANTS[row['variant']][0]} | {row['seed']} | {row['baseline']:.3f} | "
                     f"{row['learned']:.3f} | {_diff(row['learned_diff'])} | {row['calibrated']:.3f} | {extra}"
                     f"{row['baseline_big_rock']:.3f} / {row['learned_big_rock']:.3f} |")
    for field, title in (("learned_diff", "learned - baseline"), ("control_diff", "control - baseline"),
                         ("learned_tuned_diff", f"learned - {TUNED_BASELINE}")):
        by_variant = {}
        for row in results.values():
            if field in row:
                by_variant.setdefault(row["variant"], []).append(row[field][0])
        spread = [(v, d) for v, d in by_variant.items() if len(d) > 1]
        if spread:
            lines += ["", f"{title} over seeds (mIoU competition):", ""]
            lines += [f"- `{v}`: mean {np.mean(d):+.3f}, min {min(d):+.3f}, max {max(d):+.3f}, "
                      f"sd {np.std(d, ddof=1):.3f}; "
                      f"{'all of one sign' if len({np.sign(x) for x in d}) == 1 else 'signs differ'} ({len(d)} seeds)"
                      for v, d in spread]
    lines += ["", "Commands:", ""]
    lines += [f"- `{key}`: `{row['command']}`" for key, row in results.items()]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/search")
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples-per-epoch", type=int, default=3200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS if v != "full"))
    parser.add_argument("--control", action="store_true", help="also train and score the ensembling control")
    parser.add_argument("--rescore", action="store_true",
                        help="re-evaluate finished runs with this code (e.g. to add the bias-tuned baseline)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    out = Path(args.out)
    results_path = out / "study.json"
    results = json.loads(results_path.read_text())["runs"] if results_path.exists() else {}
    legacy = out / "search.json"  # written by the first version of this script: seed 0, keyed by variant
    if not results and legacy.exists():
        results = {k: {"variant": k, "seed": 0, **v} for k, v in json.loads(legacy.read_text())["variants"].items()}
    data = load_data(args.data)
    todo = [(name, seed) for seed in args.seeds for name in names]
    for i, (name, seed) in enumerate(todo):
        key = run_name(name, seed, args)
        run = out / key
        if key in results and (run / "evaluation" / "report.json").exists():
            if args.rescore:
                print(f"== {key}: re-evaluating", flush=True)
                api.evaluate(run=str(run), data=data, seed=seed, quiet=args.quiet)
                results[key].update(summarize(run))
                write_json_atomic(results_path, {**json.loads(results_path.read_text()), "runs": results})
                write_text_atomic(out / "study.md", format_markdown(results, args))
            else:
                print(f"== {key}: done already", flush=True)
            continue
        started = time.time()
        command = variant_command(name, seed, args)
        print(f"== {key} ({i + 1}/{len(todo)}): {VARIANTS[name][0]}\n   {command}", flush=True)
        overrides = VARIANTS[name][1]
        networks = [*CLASS_NAMES, BASELINE, *(control_names() if args.control else [])]
        plan_training(networks, data=data, run=str(run),
                      options=TrainOptions(preset="full", epochs=args.epochs, device="cpu", seed=seed,
                                           samples_per_epoch=args.samples_per_epoch, overrides=overrides))
        for line in reuse_finished(run, [out / other for other in results]):
            print(f"   reused {line}", flush=True)
        api.run_all(preset="full", data=data, run=str(run), epochs=args.epochs,
                    samples_per_epoch=args.samples_per_epoch, seed=seed, overrides=overrides, jobs=args.jobs,
                    with_control=args.control, quiet=args.quiet)
        results[key] = {"variant": name, "seed": seed, **summarize(run),
                        "wall_seconds": round(time.time() - started, 1), "command": command}
        write_json_atomic(results_path, {"epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch,
                                         "runs": results})
        write_text_atomic(out / "study.md", format_markdown(results, args))
    print(format_markdown(results, args))


if __name__ == "__main__":
    main()
