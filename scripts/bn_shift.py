"""How much of a corruption's drop is batch-norm statistics shift: the baseline re-normalised on the corrupted tiles.

For each corruption of the robustness benchmark at one severity, the run's baseline is scored on the corrupted
validation tiles twice: as trained, and with its batch-norm running statistics recomputed on those corrupted
tiles themselves (AdaBN; the weights never change). The share of the drop the recomputed statistics win back
is the part that is statistics shift; the rest needs other weights. This is a diagnostic (it adapts to the
very tiles it scores, which a served model cannot do), not a way to serve.

    python scripts/bn_shift.py --run models/reference [--severity 2] [--checkpoint best.pt] [--data D]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bn_statistics import recompute_statistics, score  # noqa: E402

from ensemble.core.corruptions import CORRUPTIONS  # noqa: E402
from ensemble.core.data import load_data, resolve_data_path  # noqa: E402
from ensemble.core.runfolder import RunFolder  # noqa: E402
from ensemble.evaluation.robustness import corrupted_tiles  # noqa: E402
from members.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--checkpoint", default="best.pt", help="file in RUN/baseline")
    parser.add_argument("--data", default=None)
    parser.add_argument("--severity", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = RunFolder(args.run)
    data = load_data(resolve_data_path(args.data))
    val_idx = np.asarray(folder.manifest()["split"]["val_indices"])
    images, masks = data.images[val_idx], data.masks[val_idx]
    state = load_checkpoint(folder.network_dir("baseline") / args.checkpoint)
    objective = folder.objective()
    clean = score(model_from_checkpoint(state), images, masks, objective)
    print(f"{args.run}/baseline/{args.checkpoint}: {len(val_idx)} validation tiles, severity {args.severity}, "
          f"clean {clean:.3f}")
    print(f"{'corruption':20s} {'as trained':>10s} {'recomputed':>10s} {'drop won back':>14s}")
    for corruption in CORRUPTIONS:
        tiles = corrupted_tiles(images, corruption.name, args.severity, args.seed)
        trained = score(model_from_checkpoint(state), tiles, masks, objective)
        adapted_model = recompute_statistics(model_from_checkpoint(state), tiles, masks, None, args.seed)
        adapted = score(adapted_model, tiles, masks, objective)
        share = (adapted - trained) / (clean - trained) if clean - trained > 0.005 else float("nan")
        print(f"{corruption.name:20s} {trained:10.3f} {adapted:10.3f} {share:14.0%}", flush=True)


if __name__ == "__main__":
    main()
