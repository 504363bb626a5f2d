"""Summaries of a data file: counts, class shares, groups and outliers."""
import numpy as np

from .core.classes import CLASS_NAMES, NUM_CLASSES
from .core.outliers import find_outliers


def summarize(data, min_repeats=20, uniform_share=0.95):
    """Return a JSON-ready dict describing ``data`` (a :class:`~ensemble.core.data.MarsData`)."""
    masks = data.masks
    n = len(data)
    pixel_counts = np.bincount(masks.ravel(), minlength=NUM_CLASSES)
    present = np.stack([(masks == c).any(axis=(1, 2)) for c in range(NUM_CLASSES)], axis=1)
    outliers = find_outliers(data.images, masks, min_repeats=min_repeats, uniform_share=uniform_share)
    return {
        "file": str(data.path),
        "sha256": data.sha256,
        "training_tiles": n,
        "test_tiles": 0 if data.test_images is None else int(len(data.test_images)),
        "tile_height": data.tile_shape[0],
        "tile_width": data.tile_shape[1],
        "groups": None if data.groups is None else int(len(np.unique(data.groups))),
        "classes": [
            {
                "id": c,
                "name": CLASS_NAMES[c],
                "pixel_share": float(pixel_counts[c] / pixel_counts.sum()),
                "tile_presence": float(present[:, c].mean()),
            }
            for c in range(NUM_CLASSES)
        ],
        "outliers": {reason: [int(i) for i in idx] for reason, idx in outliers.reasons.items()},
        "outlier_tiles": int(len(outliers.indices)),
        "repeated_masks": outliers.repeated_masks,
    }


def format_summary(summary):
    """Human-readable lines for :func:`summarize`'s dict."""
    lines = [
        f"file            {summary['file']}",
        f"training tiles  {summary['training_tiles']} of {summary['tile_height']}x{summary['tile_width']}",
        f"test tiles      {summary['test_tiles']}",
        f"groups          {summary['groups'] if summary['groups'] is not None else 'none (tile split, leaks)'}",
        "",
        f"{'id':>2}  {'class':<11}{'pixel share':>12}{'tiles with it':>15}",
    ]
    for c in summary["classes"]:
        lines.append(f"{c['id']:>2}  {c['name']:<11}{100 * c['pixel_share']:>11.2f}%{100 * c['tile_presence']:>14.1f}%")
    lines.append("")
    lines.append(f"outliers        {summary['outlier_tiles']} tiles")
    for reason, idx in summary["outliers"].items():
        head = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
        lines.append(f"  {reason:<14}{len(idx):>6}  (tiles {head})")
    for rep in summary["repeated_masks"]:
        lines.append(f"  one mask repeated on {rep['tiles']} tiles (first tile {rep['first_tile']})")
    return "\n".join(lines)
