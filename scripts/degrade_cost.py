"""What the training degradations add to an epoch: one epoch of a member and of the baseline with today's flips
and with ``augment.degrade``, interleaved and repeated in one run (medians), on real training tiles.

Each measurement trains a fresh network for one epoch of ``--tiles`` tiles with the real trainer
(``members.training.train_network``: batches, augmentation, forward, loss, backward, AdamW, validation on
``--val-tiles`` tiles) and reads the epoch's seconds from its history. The ratio degrade / flips is the cost.

    python scripts/degrade_cost.py [--tiles 640] [--repeats 3] [--degrade 0.6] [--threads 1] [--data D]
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble.core.augment import AugmentConfig  # noqa: E402
from ensemble.core.data import load_data, resolve_data_path  # noqa: E402
from members.batches import SplitArrays  # noqa: E402
from members.config import TrainConfig
from members.training import train_network
from members.unet import (
    UNetConfig,  # noqa: E402
    matched_baseline_width,  # noqa: E402
)


def config(name, width, tiles, degrade):
    target = None if name == "baseline" else 3
    model = UNetConfig(width=width, out_channels=5 if target is None else 1).to_dict()
    return TrainConfig(name=name, target=target, model=model, epochs=1, samples_per_epoch=tiles,
                       loss="ce" if target is None else "bce_dice",
                       augment=AugmentConfig(degrade=degrade).to_dict())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=640)
    parser.add_argument("--val-tiles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--degrade", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(resolve_data_path(args.data))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    split = SplitArrays.select(data.images, data.masks, order[: 4 * args.tiles], order[-args.val_tiles:])
    widths = {"sand member": args.width, "baseline": matched_baseline_width(args.width, 3)}
    seconds = {(net, d): [] for net in widths for d in (0.0, args.degrade)}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for net, width in widths.items():
                for degrade in (0.0, args.degrade):
                    name = "baseline" if net == "baseline" else "sand"
                    out = Path(tmp) / f"{net}-{degrade}-{repeat}".replace(" ", "_")
                    metrics = train_network(config(name, width, args.tiles, degrade), split, out, log=None)
                    seconds[(net, degrade)].append(metrics["history"][0]["seconds"])
    print(f"one epoch of {args.tiles} tiles + {args.val_tiles} validation tiles, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    for net in widths:
        flips, degraded = (statistics.median(seconds[(net, d)]) for d in (0.0, args.degrade))
        print(f"  {net} (width {widths[net]}): flips {flips:.2f} s, degrade {args.degrade:g} {degraded:.2f} s, "
              f"x{degraded / flips:.3f}")


if __name__ == "__main__":
    main()
