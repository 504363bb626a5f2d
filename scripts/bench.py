#!/usr/bin/env python
"""Benchmarks, as ratios measured side by side in one run (medians of repeated, interleaved runs).

Usage: python scripts/bench.py [--threads 2] [--repeats 5] [--width 8] [--quick]
                               [--parts inference,training,scaling,steps,flops] [--out bench.json]

1. Inference throughput (tiles/s at batch 64 and at batch 16, the CLI default; latency at
   batch 1): members one by one,
   stacked members (plain grouped network, and its folded inference form that predict and
   evaluate use), stacked + fuser, the exported program, and the width-matched baseline.
2. Training time for all members (sequential, joblib --jobs 2, --stacked) against the
   baseline's, for the same number of tiles (a short epoch on random tiles; the ratio is
   what matters).
3. How inference cost grows: 1k/4k/16k tiles and tile sizes 64x128, 128x256, 256x512 (the
   same pixels per batch: 16, 4 and 1 tiles), with the exponent of time ~ pixels fitted by
   least squares (1.0 = linear).
4. ``steps`` (not run by default): milliseconds of ``make_batch`` for a batch of 32, the
   per-tile torchvision v2 augmentation used before against today's batch augmentation;
   training-step throughput (forward, loss, backward, AdamW; batch 32) of one member and of
   the baseline in NCHW and channels-last layout; inference throughput (batch 16) of the
   baseline and the members one by one in both layouts. ``--threads 1`` gives the per-core numbers.

5. ``flops`` (training cost per FLOP): the machine's measured peak (GFLOP/s of a 2048x2048 float32
   matmul, median), then achieved GFLOP/s and the share of that peak for: inference (batch 16,
   the CLI default) of the members stacked and one by one (+ learned fuser) and the baseline,
   in PyTorch and in onnxruntime; training (one epoch of ``--train-tiles`` random tiles, the
   real trainer) of one member alone, the five members as ``ensemble train`` runs them by default
   (one job per core) and the baseline. FLOPs are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add; convolutions and matmuls)
   on one forward (inference) or one forward + backward (training) and scaled by the tiles.

Networks have random weights of the preset's sizes: speed does not depend on the weights.
"""
import argparse
import copy
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble.core.augment import AugmentConfig, build_augmentation  # noqa: E402
from ensemble.core.defaults import BATCH_SIZE  # noqa: E402
from ensemble.inference.export import export_pipeline, load_exported  # noqa: E402
from fusion import get_fuser  # noqa: E402
from members.batches import SplitArrays, build_loss, make_batch, targets_and_valid
from members.config import TrainConfig
from members.parallel import TrainTask, train_parallel  # noqa: E402
from members.stacked import StackedUNet  # noqa: E402
from members.stacked_training import train_stacked  # noqa: E402
from members.training import train_network
from members.unet import UNet, UNetConfig, count_parameters, matched_baseline_width, model_config  # noqa: E402  # noqa: E402

CLASSES = ("background", "soil", "bedrock", "sand", "big_rock")


def median_times(functions, repeats):
    """Run each function ``repeats`` times, interleaved; return the median seconds of each."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build(width, depth=3):
    """Five eval-mode members, their stacked twin, a fitted fuser, the pipeline and the baseline."""
    torch.manual_seed(0)
    members = [UNet(UNetConfig.from_dict(model_config(width, depth, 1))).eval() for _ in CLASSES]
    stacked = StackedUNet.from_members(members).eval()
    for model in [*members, stacked]:  # non-trivial batch-norm statistics, as after training
        with torch.no_grad():
            model.train()(torch.rand(2, model.config.in_channels, 64, 128))
        model.eval()
    logits = torch.randn(4, 5, 64, 128)
    fuser = get_fuser("learned", max_epochs=1).fit(logits, torch.randint(0, 5, (4, 64, 128)))
    fuser_module = fuser.module().eval()
    base_width = matched_baseline_width(width, depth)
    baseline = UNet(UNetConfig.from_dict(model_config(base_width, depth, 5))).eval()
    return members, stacked, fuser, fuser_module, baseline


def inference_table(width, repeats, workdir):
    """Tiles/s at batch 64 and batch-1 latency of every way to run the ensemble, and the baseline."""
    members, stacked, fuser, fuser_module, baseline = build(width)
    program = load_exported(export_pipeline(stacked, fuser, Path(workdir) / "bench.pt2"))
    folded = stacked.for_inference()
    ways = {
        "members one by one": lambda x: torch.cat([m(x) for m in members], 1),
        "stacked, plain": stacked,
        "stacked, folded": folded,
        "stacked + fuser": lambda x: torch.softmax(fuser_module(folded(x)), 1),
        "exported program": program,
        "multiclass baseline": baseline,
    }
    rows = {}
    with torch.inference_mode():
        for batch, key in ((64, "tiles_per_s"), (16, "tiles_per_s_16"), (1, "latency_ms")):
            x = torch.rand(batch, 1, 64, 128)
            for fn in ways.values():
                fn(x)  # warm-up
            times = median_times({name: functools.partial(fn, x) for name, fn in ways.items()}, repeats)
            for name, seconds in times.items():
                rows.setdefault(name, {})[key] = 1000 * seconds if batch == 1 else batch / seconds
    params = {
        "members": sum(count_parameters(m) for m in members),
        "baseline": count_parameters(baseline),
    }
    return rows, params


def random_training_file(workdir, tiles, name):
    """A Kaggle-layout file of random tiles (at least 64) in ``workdir``: (path, loaded data, train and val indices)."""
    from ensemble.core.data import load_data

    rng = np.random.default_rng(0)
    n = max(tiles, 64)
    images = rng.random((n, 64, 128), dtype=np.float32)
    masks = rng.integers(0, 5, (n, 64, 128)).astype(np.uint8)
    data_path = Path(workdir) / name
    np.savez(data_path, training_set=np.stack([(images * 255).astype(np.uint8), masks], 1))
    return data_path, load_data(data_path), np.arange(n - 32), np.arange(n - 32, n)


def training_table(width, tiles, repeats, workdir):
    """Seconds to train all five members (sequential, --jobs 2, --stacked) and the baseline on the same tiles."""
    data_path, data, train_idx, val_idx = random_training_file(workdir, tiles, "bench.npz")
    base_width = matched_baseline_width(width, 3)

    def config(name, net_width):
        target = CLASSES.index(name) if name != "baseline" else None
        return TrainConfig(name=name, target=target, model=model_config(net_width, 3, 1 if target is not None else 5),
                           epochs=1, samples_per_epoch=tiles, loss="bce_dice" if target is not None else "ce")

    counter = iter(range(10**6))

    def fresh(name):
        return Path(workdir) / f"t{next(counter)}" / name

    split = SplitArrays.select(data.images, data.masks, train_idx, val_idx)

    def members(jobs):
        tasks = [TrainTask(config=config(c, width).to_dict(), out_dir=str(fresh(c)), data_path=str(data_path),
                           data_sha256=data.sha256, train_idx=train_idx, val_idx=val_idx, quiet=True)
                 for c in CLASSES]
        train_parallel(tasks, jobs=jobs, data=data)

    def stacked():
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        train_stacked([config(c, width) for c in CLASSES], split, out_dirs=[fresh(c) for c in CLASSES], log=None)

    def baseline():
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        train_network(config("baseline", base_width), split, fresh("baseline"), log=None)

    return median_times({"members sequential": lambda: members(1), "members --jobs 2": lambda: members(2),
                         "members --stacked": stacked, "baseline": baseline}, repeats)


def scaling_table(width, repeats, quick):
    """Inference seconds of stacked + fuser for growing tile counts and tile sizes; fitted exponents."""
    _, stacked, _, fuser_module, _ = build(width)
    stacked = stacked.for_inference()
    counts = (250, 1000, 4000) if quick else (1000, 4000, 16000)
    sizes = ((64, 128), (128, 256), (256, 512))

    def run(n, h, w, batch=16):
        with torch.inference_mode():
            x = torch.rand(min(batch, n), 1, h, w)
            for _ in range(0, n, batch):
                torch.softmax(fuser_module(stacked(x)), 1)

    by_count = {n: median_times({n: lambda n=n: run(n, 64, 128)}, max(1, repeats // 2))[n] for n in counts}
    by_size = {f"{h}x{w}": median_times({0: lambda h=h, w=w: run(256, h, w, batch=16 * 64 * 128 // (h * w))},
                                        repeats)[0]
               for h, w in sizes}
    pixels_count = np.array(counts, dtype=float) * 64 * 128
    pixels_size = np.array([h * w for h, w in sizes], dtype=float) * 256
    exponent_count = float(np.polyfit(np.log(pixels_count), np.log(list(by_count.values())), 1)[0])
    exponent_size = float(np.polyfit(np.log(pixels_size), np.log(list(by_size.values())), 1)[0])
    return {"seconds_by_tiles": by_count, "seconds_by_size": by_size,
            "exponent_tiles": exponent_count, "exponent_size": exponent_size}


def legacy_make_batch(images, masks, positions, config):
    """``make_batch`` as it was before the batch augmentation: torchvision v2 transforms tile by tile.

    Kept here only as the reference of the ``steps`` benchmark (same transforms and options).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: 0}
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=0.5), v2.RandomRotation(degrees=config.rotate_degrees, fill=fill)])
    xs, ys = [], []
    for i in positions:
        img = tv_tensors.Image(torch.from_numpy(images[i])[None])
        msk = tv_tensors.Mask(torch.from_numpy(masks[i].astype(np.int64)))
        size = tuple(img.shape[-2:])
        ratio = size[1] / size[0]
        crop = v2.RandomResizedCrop(size, scale=(config.zoom_min_scale, 1.0), ratio=(ratio * 0.9, ratio / 0.9),
                                    antialias=True)
        img, msk = pipeline(*crop(img, msk))
        xs.append(torch.clamp(img.as_subclass(torch.Tensor), 0.0, 1.0))
        ys.append(msk.as_subclass(torch.Tensor))
    return torch.stack(xs), torch.stack(ys)


def steps_table(width, repeats, batch=32):
    """make_batch ms (per-tile v2 vs batch), training-step and inference tiles/s in NCHW vs channels-last."""
    rng = np.random.default_rng(0)
    images = rng.random((512, 64, 128), dtype=np.float32)
    masks = rng.integers(0, 5, (512, 64, 128)).astype(np.uint8)
    positions = rng.choice(512, batch, replace=False)
    config = AugmentConfig(rotate_degrees=10.0, zoom_min_scale=0.8)  # the warps on: what batching speeds up
    augment, generator = build_augmentation(config), torch.Generator().manual_seed(0)
    batch_ms = median_times({
        "per tile (torchvision v2, before)": lambda: legacy_make_batch(images, masks, positions, config),
        "batch (one grid_sample)": lambda: make_batch(images, masks, positions, augment, generator),
    }, repeats * 4)
    results = {"make_batch_ms": {name: 1000 * seconds for name, seconds in batch_ms.items()}}

    x, y = make_batch(images, masks, positions, augment, generator)
    networks = {"member": (width, 3), "baseline": (matched_baseline_width(width, 3), None)}
    layouts = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    steps, forwards = {}, {}
    for name, (net_width, target) in networks.items():
        train_config = TrainConfig(name=name, target=target, loss="bce_dice" if target else "ce")
        loss_fn = build_loss(train_config, masks)
        goal, valid = targets_and_valid(train_config, y)
        for layout_name, layout in layouts.items():
            torch.manual_seed(0)
            model = UNet(UNetConfig.from_dict(model_config(net_width, 3, 5 if target is None else 1)))
            model = model.to(memory_format=layout).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            inputs = x.contiguous(memory_format=layout)

            def step(model=model, optimizer=optimizer, inputs=inputs, loss_fn=loss_fn, goal=goal, valid=valid):
                loss = loss_fn(model(inputs), goal, valid)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()  # warm-up
            steps[f"{name} w{net_width}, {layout_name}"] = step
            eval_model = copy.deepcopy(model).eval()
            small = torch.rand(16, 1, 64, 128).contiguous(memory_format=layout)

            def forward(eval_model=eval_model, small=small):
                with torch.inference_mode():
                    eval_model(small)

            forward()
            forwards[f"{name} w{net_width}, {layout_name}"] = forward
    step_seconds = median_times(steps, repeats)
    results["train_step_tiles_per_s"] = {name: batch / seconds for name, seconds in step_seconds.items()}
    forward_seconds = median_times(forwards, repeats * 2)
    results["inference_tiles_per_s"] = {name: 16 / seconds for name, seconds in forward_seconds.items()}
    return results


def print_steps(steps, args):
    """make_batch times and the NCHW/channels-last throughput table, with ratios."""
    print(f"make_batch, batch of 32 ({args.threads} threads; median of {args.repeats * 4}):")
    batch_ms = steps["make_batch_ms"]
    before = batch_ms["per tile (torchvision v2, before)"]
    for name, ms in batch_ms.items():
        print(f"  {name:<36}{ms:>8.1f} ms  x{before / ms:.1f} faster than per tile")
    for key, title in (("train_step_tiles_per_s", "training step, batch 32"), ("inference_tiles_per_s",
                                                                               "inference (eval), batch 16")):
        print(f"{title}, tiles/s ({args.threads} threads; median of {args.repeats}):")
        rows = steps[key]
        for name, value in rows.items():
            nchw = rows[name.replace("channels_last", "NCHW")]
            print(f"  {name:<36}{value:>8.1f}  x{value / nchw:.2f} of NCHW")
    after = batch_ms["batch (one grid_sample)"]
    print("make_batch + training step, tiles/s: before (per tile, NCHW) -> after (batch, channels_last):")
    for name in ("member", "baseline"):
        rows = {k: v for k, v in steps["train_step_tiles_per_s"].items() if k.startswith(name)}
        old, new = (32 / (32 / rows[k] + ms / 1000) for k, ms in
                    ((next(k for k in rows if k.endswith("NCHW")), before),
                     (next(k for k in rows if k.endswith("channels_last")), after)))
        print(f"  {name:<36}{old:>8.1f} -> {new:.1f}  x{new / old:.2f}")


def measured_peak(repeats, n=2048):
    """GFLOP/s of an n x n float32 matmul with the current torch threads (median of ``repeats``)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    seconds = median_times({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 2 * n**3 / seconds / 1e9


def counted_flops(fn):
    """FLOPs of one call of ``fn`` as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _session(module, example):
    from ensemble.inference.engines import OnnxForward, export_onnx

    return OnnxForward(export_onnx(copy.deepcopy(module).eval(), example))


def flops_table(width, tiles, repeats, workdir):
    """Achieved GFLOP/s and share of the measured peak: inference per engine, training as the CLI runs it."""
    from ensemble.inference.engines import onnx_available
    from ensemble.inference.loading import MembersOneByOne
    from ensemble.train import default_jobs

    peak = measured_peak(repeats)
    members, stacked, _, fuser_module, baseline = build(width)
    batch = BATCH_SIZE  # the batch ensemble predict runs
    x = torch.rand(batch, 1, 64, 128)
    folded = stacked.for_inference()
    one_by_one = MembersOneByOne([m.to(memory_format=torch.channels_last) for m in members]).eval()
    baseline = baseline.to(memory_format=torch.channels_last)
    nets = {
        "ensemble, stacked (+ fuser)": torch.nn.Sequential(folded, fuser_module),
        "ensemble, one by one (+ fuser)": torch.nn.Sequential(one_by_one, fuser_module),
        "baseline": baseline,
    }
    with torch.inference_mode():
        flops = {name: counted_flops(lambda net=net: net(x)) / batch for name, net in nets.items()}
    runners = {f"{name}, torch": net for name, net in nets.items()}
    if onnx_available():
        runners.update({f"{name}, onnxruntime": _session(net, x[:2]) for name, net in nets.items()})
    with torch.inference_mode():
        for run in runners.values():
            run(x)  # warm-up
        seconds = median_times({name: (lambda run=run: run(x)) for name, run in runners.items()}, repeats * 2)
    inference = {}
    for name, sec in seconds.items():
        per_tile = flops[name.rsplit(", ", 1)[0]]
        gflops = per_tile * batch / sec / 1e9
        inference[name] = {"tiles_per_s": batch / sec, "gflop_per_tile": per_tile / 1e9, "gflop_per_s": gflops,
                           "share_of_peak": gflops / peak}

    # training: forward + backward FLOPs of one batch of 32, scaled by the tiles of one epoch
    def train_flops(net_width, out_channels):
        model = UNet(UNetConfig.from_dict(model_config(net_width, 3, out_channels))).train()
        xb = torch.rand(32, 1, 64, 128)
        return counted_flops(lambda: model(xb).sum().backward()) / 32

    base_width = matched_baseline_width(width, 3)
    per_tile = {"member": train_flops(width, 1), "baseline": train_flops(base_width, 5)}
    data_path, data, train_idx, val_idx = random_training_file(workdir, tiles, "flops.npz")
    counter = iter(range(10**6))

    def task(name, net_width):
        target = CLASSES.index(name) if name != "baseline" else None
        config = TrainConfig(name=name, target=target, model=model_config(net_width, 3, 1 if target is not None else 5),
                             epochs=1, samples_per_epoch=tiles, loss="bce_dice" if target is not None else "ce")
        return TrainTask(config=config.to_dict(), out_dir=str(Path(workdir) / f"f{next(counter)}" / name),
                         data_path=str(data_path), data_sha256=data.sha256, train_idx=train_idx, val_idx=val_idx,
                         quiet=True)

    jobs = default_jobs(CLASSES)
    ways = {
        "one member": (lambda: train_parallel([task("soil", width)], jobs=1), per_tile["member"], 1),
        f"five members, --jobs {jobs} (the default)":
            (lambda: train_parallel([task(c, width) for c in CLASSES], jobs=jobs, data=data), per_tile["member"], 5),
        "baseline": (lambda: train_parallel([task("baseline", base_width)], jobs=1), per_tile["baseline"], 1),
    }
    seconds = median_times({name: fn for name, (fn, _, _) in ways.items()}, max(1, repeats // 2))
    training = {}
    for name, (_, flops_tile, networks) in ways.items():
        gflops = flops_tile * tiles * networks / seconds[name] / 1e9
        training[name] = {"seconds": seconds[name], "tiles_per_s": tiles * networks / seconds[name],
                          "gflop_per_tile": flops_tile / 1e9, "gflop_per_s": gflops, "share_of_peak": gflops / peak}
    return {"peak_gflop_per_s": peak, "inference_batch16": inference, "training": training}


def print_flops(table, args):
    """The GFLOP/s tables."""
    peak = table["peak_gflop_per_s"]
    print(f"measured peak: {peak:.1f} GFLOP/s (2048x2048 float32 matmul, {args.threads} threads)")
    print(f"  {'inference, batch 16':<44}{'tiles/s':>9}{'GFLOP/tile':>12}{'GFLOP/s':>9}{'of peak':>9}")
    for name, row in table["inference_batch16"].items():
        print(f"  {name:<44}{row['tiles_per_s']:>9.1f}{row['gflop_per_tile']:>12.3f}{row['gflop_per_s']:>9.1f}"
              f"{row['share_of_peak']:>8.0%}")
    print(f"  {'training, ' + str(args.train_tiles) + ' tiles (1 epoch, trainer)':<44}{'tiles/s':>9}"
          f"{'GFLOP/tile':>12}{'GFLOP/s':>9}{'of peak':>9}{'seconds':>9}")
    base = table["training"]["baseline"]["seconds"]
    for name, row in table["training"].items():
        print(f"  {name:<44}{row['tiles_per_s']:>9.1f}{row['gflop_per_tile']:>12.3f}{row['gflop_per_s']:>9.1f}"
              f"{row['share_of_peak']:>8.0%}{row['seconds']:>9.1f}  x{row['seconds'] / base:.2f} of the baseline")


def print_inference(rows, params, args):
    """The inference table: tiles/s at batch 64 and 16 with ratios, and batch-1 latency."""
    print(f"inference (width {args.width}; members {params['members']:,} / baseline {params['baseline']:,} "
          f"parameters; {args.threads} threads; median of {args.repeats}):")
    one_by_one, base = rows["members one by one"], rows["multiclass baseline"]
    print(f"  {'':<22}{'batch 64 (tiles/s, vs one by one, vs baseline)':<50}{'batch 16 (same)':<36}batch 1")
    for name, row in rows.items():
        cells = [f"{row[key]:>6.1f}  x{row[key] / one_by_one[key]:.2f}  x{row[key] / base[key]:.2f}"
                 for key in ("tiles_per_s", "tiles_per_s_16")]
        print(f"  {name:<22}{cells[0]:<50}{cells[1]:<36}{row['latency_ms']:.1f} ms "
              f"(x{one_by_one['latency_ms'] / row['latency_ms']:.2f} vs one by one)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement (median)")
    parser.add_argument("--width", type=int, default=8, help="member width (default 8, the presets')")
    parser.add_argument("--train-tiles", type=int, default=256, help="tiles per training measurement")
    parser.add_argument("--quick", action="store_true", help="smaller tile counts for the scaling part")
    parser.add_argument("--parts", default="inference,training,scaling",
                        help="comma-separated parts to run: inference, training, scaling, steps, flops "
                             "(default: the first three)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    parts = set(args.parts.split(","))
    unknown = parts - {"inference", "training", "scaling", "steps", "flops"}
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; valid: inference, training, scaling, steps, "
                     "flops")
    with tempfile.TemporaryDirectory() as workdir:
        if "inference" in parts:
            rows, params = inference_table(args.width, args.repeats, workdir)
            results["inference"], results["parameters"] = rows, params
            print_inference(rows, params, args)
        if "training" in parts:
            train = training_table(args.width, args.train_tiles, max(1, args.repeats // 2), workdir)
            results["training_seconds"] = train
            print(f"training {args.train_tiles} tiles, 1 epoch, all five members vs the baseline:")
            for name, seconds in train.items():
                print(f"  {name:<22}{seconds:>8.1f} s  x{seconds / train['baseline']:.2f} of the baseline")
        if "flops" in parts:
            results["flops"] = flops = flops_table(args.width, args.train_tiles, args.repeats, workdir)
            print_flops(flops, args)
        if "steps" in parts:
            results["steps"] = steps = steps_table(args.width, args.repeats)
            print_steps(steps, args)
        if "scaling" in parts:
            results["scaling"] = scaling = scaling_table(args.width, args.repeats, args.quick)
            print("scaling of stacked + fuser inference (16 tiles of 64x128 per batch, or as many pixels):")
            for n, seconds in scaling["seconds_by_tiles"].items():
                print(f"  {n:>6} tiles of 64x128  {seconds:8.2f} s")
            for size, seconds in scaling["seconds_by_size"].items():
                print(f"  256 tiles of {size:<8}{seconds:8.2f} s")
            print(f"  fitted exponent of time ~ pixels: {scaling['exponent_tiles']:.2f} (tile count), "
                  f"{scaling['exponent_size']:.2f} (tile size); 1.0 is linear")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
