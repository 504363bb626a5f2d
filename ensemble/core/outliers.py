"""Find tiles that published solutions removed before training.

* ``repeated_mask``: one non-trivial mask repeated identically over many tiles (the
  Kaggle file has ~110 tiles sharing a synthetic 'alien' mask). Masks that are one
  terrain class almost everywhere repeat legitimately and are kept.
* ``all_background``: masks with no labeled pixel.
* ``constant_image``: images with a single grey level.
"""
from dataclasses import dataclass, field

import numpy as np

#: A mask shared by at least this many tiles is suspect.
MIN_REPEATS = 20
#: A repeated mask whose top terrain class covers at least this share of its labeled pixels is kept.
UNIFORM_SHARE = 0.95


@dataclass
class OutlierReport:
    """Indices of outlier tiles by reason, and the repeated masks found."""

    n_tiles: int
    reasons: dict = field(default_factory=dict)
    repeated_masks: list = field(default_factory=list)

    @property
    def indices(self):
        """Sorted indices of all outlier tiles."""
        if not self.reasons:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in self.reasons.values()]))

    def keep_mask(self):
        """Boolean array: True for tiles to keep."""
        keep = np.ones(self.n_tiles, dtype=bool)
        keep[self.indices] = False
        return keep


def find_outliers(images, masks, min_repeats=MIN_REPEATS, uniform_share=UNIFORM_SHARE):
    """Detect outlier tiles; see the module docstring for the rules.

    ``min_repeats``: a mask shared by at least this many tiles is suspect.
    ``uniform_share``: a repeated mask whose most common terrain class covers at least
    this share of its labeled pixels is a legitimate whole-tile label and kept.
    """
    n = len(masks)
    flat = masks.reshape(n, -1)
    report = OutlierReport(n_tiles=n)
    unique, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    repeated = []
    for u in np.flatnonzero(counts >= min_repeats):
        labeled = unique[u][unique[u] > 0]
        if labeled.size == 0:
            continue  # all-background masks are reported on their own
        top_share = np.bincount(labeled).max() / labeled.size
        if top_share >= uniform_share:
            continue
        tiles = np.flatnonzero(inverse == u)
        repeated.append(tiles)
        report.repeated_masks.append({"tiles": int(len(tiles)), "first_tile": int(tiles[0])})
    if repeated:
        report.reasons["repeated_mask"] = np.sort(np.concatenate(repeated))
    all_bg = np.flatnonzero((flat == 0).all(axis=1))
    if all_bg.size:
        report.reasons["all_background"] = all_bg
    flat_img = images.reshape(n, -1)
    constant = np.flatnonzero(flat_img.min(axis=1) == flat_img.max(axis=1))
    if constant.size:
        report.reasons["constant_image"] = constant
    return report
