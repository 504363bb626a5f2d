#!/usr/bin/env python
"""What a training command spends outside its epochs: imports, worker start-up, data, planning, the end.

Runs real ``ensemble`` training commands (``python -m ensemble ...``) with a probe on the Python path
(a ``sitecustomize`` module that only records timestamps, in every process: the command and its
joblib workers) and prints, for each command:

* the command's own steps: Python up, ``ensemble.train`` imported (torch, joblib, members), data
  loaded, run planned (manifest, split, configs), the dispatch, the exit;
* each network's start-up: from its worker's start (its fork from the workers' server, or its Python
  start; for a later network of one worker, the previous network's end) to its first optimiser step,
  and from its last epoch to its end;
* the fixed cost: the command's wall time minus the time during which at least one network was inside
  an epoch (from drawing its first batch to the end of its validation and checkpoints).

Usage: python scripts/startup_profile.py [--data D] [--out DIR] [--repeats 3] [--json FILE]
         [--train-args "--epochs 1 --samples-per-epoch 32 --width 4"]

Each repeat trains into a fresh run folder ``OUT/rN``: ``ensemble train`` (the five members; a new run:
manifest, split and outlier screening), then ``ensemble baseline`` into the same run (an existing run).
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent('''
    import atexit, functools, importlib.abc, importlib.machinery, json, os, sys, time

    _PATH = os.environ.get("MARS_STARTUP_EVENTS")

    def _event(what, **extra):
        with open(_PATH, "a") as fh:
            fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), "what": what, **extra}) + "\\n")

    def _around(owner, attr, label, name=None):
        real = getattr(owner, attr, None)
        if real is None:  # not in this version of the code
            return

        @functools.wraps(real)  # pickled by its module and name, as the real function is
        def wrapper(*args, **kwargs):
            who = name(*args, **kwargs) if name else None
            _event(label + " start", name=who)
            try:
                return real(*args, **kwargs)
            finally:
                _event(label + " end", name=who)

        setattr(owner, attr, wrapper)

    def _training(module):
        trainer = module.NetworkTrainer
        init, step, batches, end_epoch = trainer.__init__, trainer.step, trainer.epoch_batches, trainer.end_epoch

        def __init__(self, config, *args, **kwargs):
            init(self, config, *args, **kwargs)
            _event("trainer ready", name=config.name)

        def first_step(self):
            step(self)
            if not getattr(self, "_probe_stepped", False):
                self._probe_stepped = True
                _event("first step", name=self.config.name)

        def epoch_batches(self):
            _event("epoch start", name=self.config.name)
            return batches(self)

        def end(self, *args, **kwargs):
            end_epoch(self, *args, **kwargs)
            _event("epoch end", name=self.config.name)

        trainer.__init__, trainer.step = __init__, first_step
        trainer.epoch_batches, trainer.end_epoch = epoch_batches, end
        _around(module.SplitArrays, "save", "split save")

    def _parallel(module):
        _around(module, "train_task", "task",
                lambda *args, **kw: args[0].name if args else kw["config_dict"]["name"])

    def _train(module):
        _around(module, "plan_training", "plan")
        _around(module, "dispatch", "dispatch")

    def _data(module):
        _around(module, "load_data", "load data")

    _WRAP = {"members.training": _training, "members.parallel": _parallel, "ensemble.train": _train,
             "ensemble.core.data": _data, "ensemble.cli": lambda module: None, "torch": lambda module: None}

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname not in _WRAP:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return None
            real = spec.loader.exec_module

            def exec_module(module):
                _event("import " + fullname + " start")
                real(module)
                _WRAP[fullname](module)
                _event("import " + fullname + " end")

            spec.loader.exec_module = exec_module
            return spec

    if _PATH:
        _event("python up", argv=sys.argv[:3])
        # a worker forked from the workers' server (members.workers) starts at its fork
        os.register_at_fork(after_in_child=lambda: _event("python up", argv=["(forked)"]))
        sys.meta_path.insert(0, _Finder())
        atexit.register(lambda: _event("exit"))
''')


def run_command(args, events, env):
    """Run ``python -m ensemble ARGS``; return (launch time, end time, its events).

    The workers of an earlier command may still be exiting: their events are left out.
    """
    events.unlink(missing_ok=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "ensemble", *args], check=True,
                   env={**env, "MARS_STARTUP_EVENTS": str(events)}, cwd=ROOT, stdout=subprocess.DEVNULL)
    ended = time.time()
    found = [json.loads(line) for line in events.read_text().splitlines()]
    ups = {e["pid"] for e in found if e["what"] == "python up"}
    return started, ended, [e for e in found if e["pid"] in ups]


def union_length(intervals):
    """Total length covered by at least one of the ``(start, end)`` intervals."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def analyse(started, ended, events):
    """The phases of one command (seconds), as a dict."""
    parent = next(e["pid"] for e in events if e["what"] == "python up" and e["argv"][:1] == ["-m"]
                  and e["argv"][1:2] and not e["argv"][1].startswith("-"))
    first = {}
    for e in events:
        first.setdefault((e["pid"], e["what"], e.get("name")), e["t"])

    def at(what, pid=parent, name=None):
        return first.get((pid, what, name))

    phases = {"launch to python up": at("python up") - started}
    steps = [("python up", "import ensemble.cli end", "python up to the CLI imported"),
             ("import ensemble.cli end", "import ensemble.train end",
              "ensemble.train imported (torch, joblib, members)"),
             ("import ensemble.train end", "load data end", "data loaded (read, checked, sha256)"),
             ("plan start", "plan end", "run planned (manifest, split, configs)"),
             ("split save start", "split save end", "shared split written"),
             ("dispatch start", "dispatch end", "dispatch (the networks)"),
             ("dispatch end", "exit", "dispatch end to exit hooks")]
    for a, b, label in steps:
        if at(a) is not None and at(b) is not None:
            phases[label] = at(b) - at(a)
    phases["exit hooks to process end"] = ended - max(e["t"] for e in events if e["pid"] == parent)
    phases["wall"] = ended - started
    epochs = {}
    for e in events:
        if e["what"] in ("epoch start", "epoch end"):
            epochs.setdefault(e["name"], []).append((e["what"], e["t"]))
    intervals = []
    for marks in epochs.values():
        starts = [t for w, t in marks if w == "epoch start"]
        ends = [t for w, t in marks if w == "epoch end"]
        intervals += list(zip(starts, ends))
    inside = union_length(intervals)
    phases["inside epochs (any network)"] = inside
    phases["outside epochs (the fixed cost)"] = ended - started - inside
    networks = {}
    ready = sorted((e["t"], e["pid"], e["name"]) for e in events if e["what"] == "trainer ready")
    for t_ready, pid, name in ready:
        ends = [e["t"] for e in events if e["pid"] == pid and e["what"] == "task end" and e["t"] < t_ready]
        if ends:
            since, origin = max(ends), "after the worker's previous network"
        elif pid == parent:
            since, origin = at("dispatch start"), "in the command, from the dispatch"
        else:
            since, origin = at("python up", pid=pid), "from its worker's start (its fork, or its Python start)"
        step = first.get((pid, "first step", name))
        last_epoch = max((t for w, t in epochs.get(name, []) if w == "epoch end"), default=None)
        task_end = first.get((pid, "task end", name))
        networks[name] = {
            "origin": origin,
            "to first step": None if step is None else step - since,
            "last epoch to task end": None if task_end is None or last_epoch is None else task_end - last_epoch,
        }
    return phases, networks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default=None, help="folder for the run folders [default: a temporary one]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-args", default="--epochs 1 --samples-per-epoch 32 --width 4 --device cpu")
    parser.add_argument("--json", default=None, help="also write every repeat's phases here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as probe_dir:
        Path(probe_dir, "sitecustomize.py").write_text(PROBE)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([probe_dir, str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        out = Path(args.out or tempfile.mkdtemp(prefix="startup-"))
        data = ["--data", args.data] if args.data else []
        extra = shlex.split(args.train_args)
        # the baseline's width is matched to the members': it gets no --width N
        base = [a for i, a in enumerate(extra) if a != "--width" and (i == 0 or extra[i - 1] != "--width")]
        commands = {"train": ["train", *extra], "baseline": ["baseline", *base]}
        records = {name: [] for name in commands}
        for repeat in range(args.repeats):
            run = out / f"r{repeat}"
            for name, words in commands.items():
                started, ended, events = run_command([*words, *data, "--run", str(run), "--quiet"],
                                                     Path(probe_dir) / "events.jsonl", env)
                records[name].append(analyse(started, ended, events))
    report = {}
    for name, results in records.items():
        print(f"\n== ensemble {name} {' '.join(commands[name][1:])} (median of {len(results)})")
        keys = list(results[0][0])
        report[name] = {"phases": {}, "networks": {}}
        for key in keys:
            values = [r[0][key] for r in results if r[0].get(key) is not None]
            report[name]["phases"][key] = statistics.median(values)
            print(f"  {key:<52}{statistics.median(values):7.2f} s")
        for net, info in results[0][1].items():
            row = {k: statistics.median([r[1][net][k] for r in results if r[1].get(net, {}).get(k) is not None])
                   for k in ("to first step", "last epoch to task end")
                   if any(r[1].get(net, {}).get(k) is not None for r in results)}
            report[name]["networks"][net] = {**row, "origin": info["origin"]}
            cells = "  ".join(f"{k} {v:.2f} s" for k, v in row.items())
            print(f"  {net:<11}{cells}  ({info['origin']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "report": report}, indent=1))


if __name__ == "__main__":
    main()
