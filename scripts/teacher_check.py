"""Which teacher the student learns from, at a reduced budget: the run's served default against a teacher with no
parameter fitted on the validation tiles (``vote``, the plain mean of the members' and the baseline's softmax).

A teacher is a strategy of RUN, or ``OTHER_RUN:STRATEGY`` for one of another run (the shipped flips-only run, say:
a clean teacher for a student trained with the robust recipe). Each teacher gets its own copy of its run
(``<root>/<strategy>``, or ``<root>/<run name>-<strategy>``: records copied, checkpoints and cached logits
hard-linked, the run itself untouched) and a student distilled there for ``--epochs`` epochs of the full preset with
``--seed``, resumed if cut. Each student is then scored on the validation tiles, clean and under the robustness
benchmark's corruptions at ``--severities``. Prints per teacher the student's clean mIoU, mPC, worst corruption and
mean epoch seconds, and, for every teacher after the first, the difference of its student from the first's,
clean and mPC, each with its 95 % paired bootstrap interval over tiles. Writes ``<root>/teacher_check.json``.

    python scripts/teacher_check.py --run runs/reference --epochs 4 stacked vote models/reference:stacked
"""
import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from robust_recipes import benchmark_scores

from ensemble import api
from ensemble.core.classes import NUM_CLASSES, STUDENT
from ensemble.core.data import load_data, resolve_data_path
from ensemble.core.fileio import write_json_atomic
from ensemble.core.metrics import mean_ious
from ensemble.core.objectives import HEADLINE_CONVENTION
from ensemble.core.runfolder import RunFolder
from ensemble.evaluation.bootstrap import paired_bootstrap
from ensemble.evaluation.robustness import robustness_table

#: What a copy leaves out: training leftovers, and any student of RUN.
LEFT_OUT = ("latest.pt", "snapshots", "logs", "tensorboard", "progress.png", ".training.lock", STUDENT)


def _link_or_copy(src, dst):
    """Checkpoints and cached arrays are hard-linked (a run replaces its files, never rewrites one in place, so a
    link never changes RUN); everything else is copied."""
    if src.endswith((".pt", ".npy")):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def teacher_copy(run, dest):
    """``dest`` as a copy of ``run`` to distil into, made once (a temporary folder, then renamed)."""
    if dest.exists():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run, tmp, ignore=shutil.ignore_patterns(*LEFT_OUT), copy_function=_link_or_copy)
    os.replace(tmp, dest)
    return dest


def block_diagonal(cms):
    """(N, K*C, K*C) per-tile matrices with the K (N, C, C) sets on the diagonal: one paired resampling of the
    tiles then applies to every corrupted set at once."""
    n, k = len(cms[0]), len(cms)
    out = np.zeros((n, k * NUM_CLASSES, k * NUM_CLASSES), dtype=np.int64)
    for i, cm in enumerate(cms):
        out[:, i * NUM_CLASSES:(i + 1) * NUM_CLASSES, i * NUM_CLASSES:(i + 1) * NUM_CLASSES] = cm
    return out


def mean_block_miou(cms, convention):
    """The mean over the diagonal blocks of their mIoU: mPC of :func:`block_diagonal` matrices (..., kC, kC), an
    array of the leading shape (vectorised like :func:`~ensemble.core.metrics.mean_ious`)."""
    cms = np.asarray(cms)
    blocks = [cms[..., i:i + NUM_CLASSES, i:i + NUM_CLASSES] for i in range(0, cms.shape[-1], NUM_CLASSES)]
    return np.mean([mean_ious(block, convention) for block in blocks], axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teachers", nargs="+", help="[OTHER_RUN:]STRATEGY: served strategies of RUN or of another "
                        "run (the first is the one the others are compared with)")
    parser.add_argument("--run", default="runs/reference")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severities", default="2", help="comma-separated severities [default: the middle one]")
    parser.add_argument("--root", default="runs/teachers")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    log = None if args.quiet else print
    data = load_data(resolve_data_path(args.data))
    convention = HEADLINE_CONVENTION[RunFolder(args.run).objective()]
    severities = [int(s) for s in args.severities.split(",")]
    out, lines, sets = {"epochs": args.epochs, "seed": args.seed, "severities": severities, "teachers": {}}, [], {}
    for teacher in args.teachers:
        source, _, strategy = teacher.rpartition(":")
        name = f"{Path(source).name}-{strategy}" if source else strategy
        run = teacher_copy(Path(source or args.run), Path(args.root) / name)
        metrics = api.distill(data=str(data.path), run=str(run), teacher=strategy, preset="full", epochs=args.epochs,
                              seed=args.seed, quiet=args.quiet)
        result = benchmark_scores(run, data, model=STUDENT, seed=args.seed, corruptions=None, severities=severities,
                                  log=log)
        table = robustness_table(result, convention, n_boot=args.n_boot, seed=args.seed)
        entry = table["models"][STUDENT]
        seconds = float(np.mean([h["seconds"] for h in metrics["history"]])) if metrics.get("history") else None
        out["teachers"][teacher] = {"clean": entry["clean"], "mpc": entry["all"]["mpc"],
                                    "worst": entry["all"]["worst"], "epoch_seconds": seconds}
        keys = sorted(k for k in result.corrupted)
        sets[teacher] = (result.clean[STUDENT], block_diagonal([result.corrupted[k] for k in keys]),
                         RunFolder(run).manifest()["split"]["val_indices"])
        lines.append(f"{teacher:10s} student clean {entry['clean']:.3f}  mPC {entry['all']['mpc']:.3f}  worst "
                     f"{entry['all']['worst']['corruption']} {entry['all']['worst']['severity']} "
                     f"{entry['all']['worst']['miou']:.3f}  epoch {seconds or 0:.0f}s")
        print(lines[-1], flush=True)
    first = args.teachers[0]
    for teacher in args.teachers[1:]:
        if sets[teacher][2] != sets[first][2]:
            raise SystemExit(f"{teacher}: its run's validation tiles are not {first}'s; no paired comparison")
        clean = paired_bootstrap(sets[first][0], sets[teacher][0], lambda cms: mean_ious(cms, convention),
                                 n_boot=args.n_boot, seed=args.seed)
        mpc = paired_bootstrap(sets[first][1], sets[teacher][1], lambda cms: mean_block_miou(cms, convention),
                               n_boot=args.n_boot, seed=args.seed)
        out["teachers"][teacher]["minus_" + first] = {"clean": clean, "mpc": mpc}
        lines.append(f"{teacher} - {first}: clean {clean['diff']:+.3f} [{clean['low']:+.3f}, {clean['high']:+.3f}]"
                     f"  mPC {mpc['diff']:+.3f} [{mpc['low']:+.3f}, {mpc['high']:+.3f}]")
    write_json_atomic(Path(args.root) / "teacher_check.json", out)
    print("\n".join(["", f"students at {args.epochs} epochs (validation tiles, seed {args.seed}, severities "
                         f"{args.severities}):", *lines]))


if __name__ == "__main__":
    main()
