"""Recipe search (issue 14): train members and baseline under several recipes at a reduced budget, compare.

Every variant is a whole ``ensemble run`` (members, matched baseline, every fuser, cross-fitted
evaluation on the validation split; ``test_set`` is never scored) into ``OUT/<variant>``, with every
searched setting given explicitly by ``--set``, so each row's command below stays valid when the
presets change. A network whose training config is identical to one already finished in an earlier
variant (same data, split and seed) is copied instead of retrained. Results go to ``OUT/search.md``
and ``OUT/search.json``; a finished variant is not run again.

Usage:
  python scripts/recipe_search.py [--out runs/search] [--epochs 6] [--samples-per-epoch 3200]
                                  [--jobs 2] [--seed 0] [--variants today,cosine,...]
"""
import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble import api  # noqa: E402
from ensemble.core.classes import BASELINE, CLASS_NAMES  # noqa: E402
from ensemble.core.data import load_data  # noqa: E402
from ensemble.core.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from ensemble.core.runfolder import METRICS, RunFolder  # noqa: E402
from ensemble.train import plan_training  # noqa: E402

#: The first recipe (the ``full`` preset before this search), every searched setting explicit.
TODAY = [
    "schedule=cosine_epoch", "warmup_epochs=0", "min_lr_ratio=0.05", "patience=4", "ema_decay=0",
    "weight_decay=0.0001", "model.dropout=0", "augment.hflip=true", "augment.rotate_degrees=10",
    "augment.zoom_min_scale=0.8", "batch_size=32", "lr=0.002", "members:sampler_weight=1",
    "big_rock:sampler_weight=4", "baseline:sampler_weight=1",
]
#: Warm-up then cosine to zero, stepped every batch, no early stopping.
COSINE = ["schedule=cosine", "warmup_epochs=0.25", "min_lr_ratio=0", "patience=0"]

#: name -> (what changed, overrides on top of TODAY). One factor at a time against ``cosine``.
VARIANTS = {
    "today": ("first recipe: cosine per epoch to 0.05 lr, early stopping (patience 4), flip+rotate+zoom", []),
    "cosine": ("warm-up 1/4 epoch, then cosine per step to 0; no early stopping", COSINE),
    "cosine_flips": ("cosine + horizontal flips only (no rotation, no zoom)",
                     COSINE + ["augment.rotate_degrees=0", "augment.zoom_min_scale=1"]),
    "cosine_bigrock": ("cosine + baseline oversamples big-rock tiles x4 like the big-rock member",
                       COSINE + ["baseline:sampler_weight=4"]),
    "cosine_ema": ("cosine + EMA of the weights (decay 0.995) validated and kept", COSINE + ["ema_decay=0.995"]),
    "cosine_reg": ("cosine + dropout 0.2 + weight decay 0.01", COSINE + ["model.dropout=0.2", "weight_decay=0.01"]),
    "cosine_b16": ("cosine + batch 16 (twice the steps)", COSINE + ["batch_size=16"]),
}


def variant_command(name, args):
    """The ``ensemble run`` command that trains and evaluates variant ``name``."""
    words = ["ensemble", "run", "--preset", "full", "--run", f"{args.out}/{name}", "--epochs", str(args.epochs),
             "--samples-per-epoch", str(args.samples_per_epoch), "--jobs", str(args.jobs), "--seed", str(args.seed)]
    for item in TODAY + VARIANTS[name][1]:
        words += ["--set", item]
    return shlex.join(words)


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
            if (other_config["settings"] == config["settings"] and other_config["networks"].get(name) == wanted
                    and (source / METRICS).exists() and json.loads((source / METRICS).read_text()).get("finished")):
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(source, target)
                reused.append(f"{name} from {other}")
                break
    return reused


def summarize(run):
    """The row of one finished variant from its ``evaluation/report.json``."""
    table = json.loads((Path(run) / "evaluation" / "report.json").read_text())["table"]
    models, diff = table["models"], table["differences"]
    row = {"baseline": models["baseline"]["miou"]["competition"],
           "baseline_big_rock": models["baseline"]["iou"]["big_rock"]}
    for strategy in ("calibrated", "learned"):
        row[strategy] = models[strategy]["miou"]["competition"]
        row[f"{strategy}_big_rock"] = models[strategy]["iou"]["big_rock"]
        d = diff[strategy]["miou_competition"]
        row[f"{strategy}_diff"] = [d["diff"], d["low"], d["high"]]
    metrics = [json.loads(p.read_text()) for p in sorted(Path(run).glob(f"*/*/{METRICS}"))]
    row["train_seconds"] = {m["name"]: round(m["seconds"], 1) for m in metrics}
    return row


def format_markdown(results, args):
    lines = [
        f"Validation split, competition metric, {args.epochs} epochs x {args.samples_per_epoch} tiles per network "
        f"(seed {args.seed}); fusers cross-fitted; 95 % paired bootstrap interval over tiles.", "",
        "| variant | what changed | baseline mIoU | learned mIoU | learned - baseline [95 % CI] | calibrated mIoU "
        "| big rock: baseline / learned |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for name, row in results.items():
        d = row["learned_diff"]
        lines.append(f"| `{name}` | {VARIANTS[name][0]} | {row['baseline']:.3f} | {row['learned']:.3f} | "
                     f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | {row['calibrated']:.3f} | "
                     f"{row['baseline_big_rock']:.3f} / {row['learned_big_rock']:.3f} |")
    lines += ["", "Commands:", ""]
    lines += [f"- `{name}`: `{variant_command(name, args)}`" for name in results]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/search")
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples-per-epoch", type=int, default=3200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    out = Path(args.out)
    results_path = out / "search.json"
    results = json.loads(results_path.read_text())["variants"] if results_path.exists() else {}
    data = load_data(args.data)
    for i, name in enumerate(names):
        run = out / name
        if name in results and (run / "evaluation" / "report.json").exists():
            print(f"== {name}: done already", flush=True)
            continue
        started = time.time()
        print(f"== {name} ({i + 1}/{len(names)}): {VARIANTS[name][0]}\n   {variant_command(name, args)}", flush=True)
        options = dict(preset="full", data=data, run=str(run), epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                       seed=args.seed, overrides=TODAY + VARIANTS[name][1], quiet=args.quiet)
        plan_training([*CLASS_NAMES, BASELINE], data, str(run), "full", args.epochs, None, "cpu", args.seed,
                      objective=None, samples_per_epoch=args.samples_per_epoch, overrides=TODAY + VARIANTS[name][1])
        for line in reuse_finished(run, [out / other for other in results]):
            print(f"   reused {line}", flush=True)
        api.run_all(jobs=args.jobs, **options)
        results[name] = {**summarize(run), "wall_seconds": round(time.time() - started, 1),
                         "command": variant_command(name, args)}
        write_json_atomic(results_path, {"epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch,
                                         "seed": args.seed, "variants": results})
        write_text_atomic(out / "search.md", format_markdown(results, args))
        print(format_markdown({name: results[name]}, args).split("\n\n")[1], flush=True)
    print(format_markdown(results, args))


if __name__ == "__main__":
    main()
