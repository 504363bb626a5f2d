"""Where onnxruntime spends a graph's time: time per operator type, from its own profiler.

Runs each ONNX graph a run keeps in ``RUN/cache/onnx/`` (written the first time ``ensemble predict``
runs it: ``members_one_by_one``, ``members``, ``baseline``) on random tiles in batches of
``--batch-size``, with onnxruntime's profiling on, then sums the kernel time of every node by
operator type. ``Reorder*`` nodes are onnxruntime's conversions to and from its blocked (NCHWc)
layout on the CPU; the ops it cannot run blocked (e.g. ``ConvTranspose``, ``Concat``) need them.

Usage: python scripts/onnx_profile.py RUN/cache/onnx/members_one_by_one.onnx RUN/cache/onnx/baseline.onnx
           [--threads 2] [--batch-size 16] [--runs 40]
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np


def profile(path, threads, batch_size, runs, height=64, width=128):
    """``(ms per run, {op type: (ms per run, nodes per run)})`` of graph ``path`` on random tiles."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        tiles = np.random.default_rng(0).random((batch_size, 1, height, width), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {"images": tiles})
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    micros, nodes = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    per_op = {op: (us / runs / 1000, nodes[op] // runs) for op, us in micros.most_common()}
    return sum(micros.values()) / runs / 1000, per_op


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", help="ONNX graphs (RUN/cache/onnx/*.onnx)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--top", type=int, default=8, help="operator types listed per graph")
    args = parser.parse_args()
    for path in args.graphs:
        total, per_op = profile(path, args.threads, args.batch_size, args.runs)
        print(f"\n{os.path.basename(path)}: {total:.1f} ms per batch of {args.batch_size} "
              f"({args.threads} threads, kernel time)")
        print("| operator | ms per batch | share | nodes |\n|---|---:|---:|---:|")
        for op, (ms, count) in list(per_op.items())[: args.top]:
            print(f"| {op} | {ms:.2f} | {100 * ms / total:.1f} % | {count} |")


if __name__ == "__main__":
    main()
