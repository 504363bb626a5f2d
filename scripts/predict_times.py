"""Wall time of the whole ``ensemble predict`` command per served strategy, interleaved in rounds on one machine.

Each round runs ``ensemble predict --run RUN --strategy S --out <tmp>.csv --quiet`` once per strategy, in the
order given (start-up, reading the data file and writing the CSV included: what a user waits for), on the data
file's test tiles. One warm-up call per strategy first exports its ONNX graphs (a one-time cost) and is not
timed. Prints each round's seconds, the median, and the median's ratio to the first strategy's; ``--out``
also writes them as JSON.

    python scripts/predict_times.py --run models/reference --rounds 3 baseline student stacked
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The ``ensemble`` command of this interpreter's environment.
ENSEMBLE = [str(Path(sys.executable).with_name("ensemble"))]


def predict_seconds(run, strategy, data, out, extra=()):
    """Seconds of one ``ensemble predict`` call; a failing call stops the script with its last error line."""
    args = [*ENSEMBLE, "predict", "--run", run, "--strategy", strategy, "--out", str(out), "--quiet", *extra]
    if data:
        args += ["--data", data]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or ["(no message)"]
        raise SystemExit(f"predict --strategy {strategy}: exit {proc.returncode}: {lines[-1]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("strategies", nargs="+", help="served strategies (the first is the one ratios are to)")
    parser.add_argument("--run", default="models/reference")
    parser.add_argument("--data", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the times as JSON here")
    args = parser.parse_args()
    times = {s: [] for s in args.strategies}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "masks.csv"
        for strategy in args.strategies:
            predict_seconds(args.run, strategy, args.data, csv)  # warm-up: the ONNX export, once
        for round_ in range(args.rounds):
            for strategy in args.strategies:
                times[strategy].append(predict_seconds(args.run, strategy, args.data, csv))
            print(f"round {round_ + 1}: " + ", ".join(f"{s} {times[s][-1]:.1f} s" for s in args.strategies),
                  flush=True)
    first = statistics.median(times[args.strategies[0]])
    result = {s: {"seconds": t, "median": statistics.median(t), "ratio": statistics.median(t) / first}
              for s, t in times.items()}
    for strategy, entry in result.items():
        print(f"{strategy:20s} median {entry['median']:6.1f} s  x{entry['ratio']:.2f} of {args.strategies[0]}")
    if args.out:
        Path(args.out).write_text(json.dumps({"run": args.run, "rounds": args.rounds, "strategies": result},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()
