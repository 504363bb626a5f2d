"""Time the two ONNX exporters on a run's networks, and onnxruntime on each exporter's graph.

For each network set that ``ensemble predict`` exports (the members, the baseline), in ``--rounds``
interleaved rounds: the seconds of ``torch.onnx.export`` by the TorchScript exporter (``dynamo=False``, what
:func:`ensemble.inference.engines.export_onnx` uses when its graph reproduces the module) and by the
torch.export-based one (``dynamo=True``), then onnxruntime's seconds for ``--tiles`` validation-sized random
tiles on each graph, and the largest difference of their outputs from the PyTorch module's (finite entries).

Usage: python scripts/export_times.py [--run models/reference] [--rounds 3] [--tiles 400] [--threads 1]
"""
import argparse
import statistics
import time

import torch


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _largest_difference(got, want):
    finite = torch.isfinite(want)
    return float((got[finite] - want[finite]).abs().max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="models/reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiles", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ensemble.inference import Predictor
    from ensemble.inference.engines import OnnxForward, _dynamo_export, _quiet_export, _torchscript_export
    from ensemble.inference.options import InferenceOptions

    tiles = torch.rand((args.tiles, 1, 64, 128), generator=torch.Generator().manual_seed(0))
    for source, label in ((None, "members"), ("baseline", "baseline")):
        predictor = Predictor(args.run, source, options=InferenceOptions(engine="torch", tta="none"))
        module = predictor._make_source(source or "members").eval()
        with torch.no_grad():
            expected = module(tiles)
        times = {"torchscript": [], "dynamo": []}
        runs = {"torchscript": [], "dynamo": []}
        differences = {}
        for _ in range(args.rounds):
            for name, export in (("torchscript", _torchscript_export), ("dynamo", _dynamo_export)):
                with _quiet_export(), torch.no_grad():
                    seconds, graph = _timed(lambda export=export, module=module: export(module, tiles[:2]))
                times[name].append(seconds)
                forward = OnnxForward(graph, threads=args.threads)
                forward(tiles[:16])  # the session's first run allocates
                seconds, outputs = _timed(lambda forward=forward: forward(tiles))
                runs[name].append(seconds)
                differences[name] = _largest_difference(outputs, expected)
        for name in times:
            print(f"{label:<9} {name:<12} export {statistics.median(times[name]):6.2f} s   onnxruntime "
                  f"{args.tiles} tiles {statistics.median(runs[name]):6.2f} s   largest |difference| "
                  f"{differences[name]:.2e}   (medians of {args.rounds} rounds, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
