"""Summaries of a data file: counts, class shares, groups and outliers."""
import numpy as np

from .classes import CLASS_NAMES, NUM_CLASSES, pixel_counts
from .outliers import MIN_REPEATS, UNIFORM_SHARE, find_outliers


def summarize(data, min_repeats=MIN_REPEATS, uniform_share=UNIFORM_SHARE):
    """Return a JSON-ready dict describing ``data`` (a :class:`~ensemble.core.data.MarsData`)."""
    masks = data.masks
    n = len(data)
    counts = pixel_counts(masks)
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
                "pixel_share": float(counts[c] / counts.sum()),
                "tile_presence": float(present[:, c].mean()),
            }
            for c in range(NUM_CLASSES)
        ],
        "outliers": {reason: [int(i) for i in idx] for reason, idx in outliers.reasons.items()},
        "outlier_tiles": int(len(outliers.indices)),
        "repeated_masks": outliers.repeated_masks,
    }
