"""Why rotation and zoom hurt: the baseline's validation mIoU with its batch-norm statistics
as trained, and recomputed on 1024 training tiles passed through each augmentation.

Rotation and zoom resample the tiles (bilinear), which blurs them; statistics gathered on blurred
tiles misfit the sharp validation tiles. The weights are never changed: only the running means and
variances of the batch-norm layers are recomputed (cumulative average over the tiles, in train mode,
no gradient), then the network is scored in eval mode on every validation tile.

Usage: python scripts/bn_statistics.py --run runs/search/cosine [--checkpoint latest.pt] [--data D]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble.core.augment import AugmentConfig, build_augmentation  # noqa: E402
from ensemble.core.data import load_data  # noqa: E402
from ensemble.core.metrics import confusion_matrix, mean_iou  # noqa: E402
from ensemble.core.objectives import HEADLINE_CONVENTION, for_objective  # noqa: E402
from ensemble.core.runfolder import RunFolder  # noqa: E402
from members.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

AUGMENTATIONS = {
    "none (sharp tiles)": None,
    "flips": AugmentConfig(rotate_degrees=0.0, zoom_min_scale=1.0),
    "zoom (crop >= 0.8 of the area)": AugmentConfig(rotate_degrees=0.0, zoom_min_scale=0.8),
    "rotation (+-10 degrees)": AugmentConfig(rotate_degrees=10.0, zoom_min_scale=1.0),
    "flip + rotation + zoom (the first recipe)": AugmentConfig(rotate_degrees=10.0, zoom_min_scale=0.8),
}


def score(model, images, masks, objective):
    """Headline mean IoU of ``model`` (eval mode) on the tiles."""
    model.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            x = torch.from_numpy(images[start : start + 64])[:, None]
            preds.append(for_objective(model, objective)(x).argmax(1).numpy())
    return mean_iou(confusion_matrix(masks, np.concatenate(preds)), HEADLINE_CONVENTION[objective])


def recompute_statistics(model, images, masks, augment, seed=0, batch_size=32):
    """Reset every batch-norm layer's running statistics and average them over ``images`` (augmented)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size])[:, None]
            y = torch.from_numpy(masks[start : start + batch_size].astype(np.int64))
            if augment is not None:
                x, y = augment(x, y, generator)
            model(x)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--checkpoint", default="latest.pt", help="file in RUN/baseline (latest.pt: the last epoch)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--tiles", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = RunFolder(args.run)
    data = load_data(args.data)
    split = folder.manifest()["split"]
    val_idx = np.asarray(split["val_indices"])
    train_idx = np.random.default_rng(args.seed).choice(np.asarray(split["train_indices"]), args.tiles, replace=False)
    state = load_checkpoint(folder.network_dir("baseline") / args.checkpoint)
    objective = folder.objective()
    val_images, val_masks = data.images[val_idx], data.masks[val_idx]
    print(f"{args.run}/baseline/{args.checkpoint} (epoch {state.get('epoch')}), {len(val_idx)} validation tiles, "
          f"mIoU {HEADLINE_CONVENTION[objective]}")
    print(f"  statistics as trained: {score(model_from_checkpoint(state), val_images, val_masks, objective):.3f}")
    for name, config in AUGMENTATIONS.items():
        model = recompute_statistics(model_from_checkpoint(state), data.images[train_idx], data.masks[train_idx],
                                     None if config is None else build_augmentation(config), args.seed)
        print(f"  recomputed on {args.tiles} training tiles, augmentation {name}: "
              f"{score(model, val_images, val_masks, objective):.3f}")


if __name__ == "__main__":
    main()
