"""The figures of an evaluation's report: a confusion heatmap per model, and the sheet of the validation tiles
where the baseline and the shown strategy differ most."""
import math

from ..core.classes import BASELINE
from ..reporting.figures import confusion_png, most_different_tiles, overlay_sheet

#: Tiles shown in ``differences.png``.
DIFFERENCE_TILES = 8


def _difference_strategy(table, strategies):
    """``learned`` if fitted, else the strategy with the best headline mean IoU."""
    if "learned" in strategies:
        return "learned"

    def miou(name):
        value = table["models"][name]["miou"][table["headline"]]
        return value if math.isfinite(value) else -math.inf

    return max(strategies, key=miou)


def write_figures(out_dir, table, scores, images, strategies):
    """``confusion_<model>.png`` per model (stale ones of removed fusers deleted) and ``differences.png``.

    Returns ``(shown strategy, indices of the tiles shown)``.
    """
    for stale in out_dir.glob("confusion_*.png"):  # figures of fusers removed since the last evaluation
        if stale.stem[len("confusion_"):] not in scores.tile_cms:
            stale.unlink()
    n = len(scores.val_idx)
    for name, cms in scores.tile_cms.items():
        row = table["models"][name]
        title = f"{name}: {n} validation tiles, mIoU {table['headline']} {row['miou'][table['headline']]:.3f}"
        confusion_png(cms.sum(axis=0), out_dir / f"confusion_{name}.png", title)
    shown = _difference_strategy(table, strategies)
    preds = scores.preds
    idx = most_different_tiles(preds[BASELINE], preds[shown], scores.truth, DIFFERENCE_TILES)  # most different first
    overlay_sheet(images[idx], scores.truth[idx], preds[BASELINE][idx], preds[shown][idx],
                  out_dir / "differences.png", labels=("image", "truth", BASELINE, shown))
    return shown, idx
