"""Ship a finished, evaluated run: copy it into models/ as the run the tool serves, without its working files.

``python scripts/ship_run.py --run runs/reference`` replaces ``models/reference`` with the run's files less
those ``.gitignore`` keeps out of ``models/`` (``latest.pt`` resume state, budget-curve snapshots, caches, logs,
TensorBoard logs, ``progress.png``, locks, the difference image of validation tiles), so what is committed
is exactly what ``git add models/reference`` would take. Before anything is written it checks that the run
is finished (every network's ``metrics.json`` says so, ``evaluation/report.json`` exists), that every
checkpoint and fuser it ships matches the sha256 in the run's manifest, and that no shipped file is over
the size limit of a committed file. The new folder is copied next to the old one and swapped in with two
renames, so a failure leaves the shipped run whole. When the destination is this checkout's
``models/reference``, the README's reference table (``scripts/reference_table.py``) and the model card
(``scripts/model_card.py``) are then regenerated from it.

What stays to be done by hand is printed at the end: the documents whose numbers come from the shipped
run (``tests/test_docs.py`` and ``tests/test_reference_run.py`` name the stale ones).

Usage: python scripts/ship_run.py [--run RUN] [--to models/reference] [--dry-run]
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import model_card  # sibling scripts: scripts/ is on sys.path when this one runs
import reference_table

ROOT = Path(__file__).resolve().parents[1]
DESTINATION = ROOT / "models" / "reference"
#: The largest file a shipped run may commit (weights included): the repository keeps no large files.
MAX_FILE_BYTES = 5 * 1024 * 1024


class ShipError(Exception):
    """A run that cannot be shipped: the message names the file and what was expected."""


def ignored(relative_paths, name):
    """The subset of ``relative_paths`` (inside a run) that ``.gitignore`` keeps out of ``models/<name>/``,
    asked of git itself so that the rule lives in one place."""
    shown = {f"models/{name}/{p.as_posix()}": p for p in relative_paths}
    if not shown:
        return set()
    try:
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin", "-z"],
                                input="\0".join(shown) + "\0", capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ShipError(f"git is needed to read {ROOT / '.gitignore'}: {exc}") from exc
    if result.returncode not in (0, 1):  # 1: nothing ignored
        raise ShipError(f"git check-ignore failed in {ROOT}: {result.stderr.strip()}")
    return {shown[p] for p in result.stdout.split("\0") if p}


def shipped_files(run, name):
    """The files of ``run`` (paths relative to it) that a shipped copy named ``name`` keeps, sorted."""
    files = [p.relative_to(run) for p in run.rglob("*") if p.is_file()]
    drop = ignored(files, name)
    return sorted(p for p in files if p not in drop)


def check_run(run, files):
    """Refuse a run that is unfinished, unevaluated, altered since written, or holds an oversized file."""
    from ensemble.core.errors import RunError
    from ensemble.core.runfolder import BEST, FUSER_SUFFIX, METRICS, RunFolder

    folder = RunFolder(run)
    for required in (folder.config_path, folder.manifest_path, folder.evaluation_dir / "report.json"):
        if not required.is_file():
            raise ShipError(f"{required}: missing; ship a run that is trained, fused and evaluated "
                            "(scripts/reference_run.sh)")
    for rel in files:
        path = run / rel
        if rel.name == BEST:
            metrics = path.parent / METRICS
            if not metrics.is_file() or not folder.read_json(metrics).get("finished"):
                raise ShipError(f"{metrics}: the network has not finished training (rerun the training "
                                "command to finish it)")
        if rel.name == BEST or (path.parent == folder.fusion_dir and path.suffix == FUSER_SUFFIX):
            try:
                folder.verify(path)
            except RunError as exc:
                raise ShipError(str(exc)) from exc
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ShipError(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} "
                            "MiB a committed file may hold")


def copy_run(run, files, destination):
    """Copy ``files`` of ``run`` into a new ``destination``, replacing the old one in two renames."""
    staging = destination.with_name(f".{destination.name}.new-{os.getpid()}")
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for rel in files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / rel, target)
        if destination.exists():
            os.replace(destination, retired)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)


def regenerate_docs():
    """The README's reference table and the model card, from the newly shipped models/reference."""
    reference_table.main(["--write"])
    return model_card.main(["--run", str(DESTINATION), "--write"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/reference", help="the finished, evaluated run [default: runs/reference]")
    parser.add_argument("--to", default=str(DESTINATION), help="the shipped folder it replaces "
                                                                "[default: models/reference]")
    parser.add_argument("--dry-run", action="store_true", help="check and list what would be shipped, write nothing")
    args = parser.parse_args(argv)
    run, destination = Path(args.run), Path(args.to)
    try:
        if not run.is_dir():
            raise ShipError(f"{run}: no such run folder")
        if run.resolve() == destination.resolve():
            raise ShipError(f"--to {destination}: the run itself; name the folder it replaces")
        files = shipped_files(run, destination.name)
        check_run(run, files)
    except ShipError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    size = sum((run / rel).stat().st_size for rel in files)
    print(f"{run}: {len(files)} files, {size / 2**20:.1f} MiB to ship as {destination}")
    if args.dry_run:
        print("\n".join(f"  {rel.as_posix()}" for rel in files))
        return 0
    copy_run(run, files, destination)
    print(f"shipped {destination}")
    if destination.resolve() != DESTINATION.resolve():
        return 0
    status = regenerate_docs()
    print("left to do: the numbers of the docs that come from the shipped run (docs/results.md, README.md); "
          "`pytest tests/test_docs.py tests/test_reference_run.py tests/test_recorded_defaults.py` names the "
          "stale ones")
    return status


if __name__ == "__main__":
    sys.exit(main())
