"""Find tiles that published solutions removed before training.

* ``repeated_mask``: one non-trivial mask repeated identically over many tiles (the
  Kaggle file has ~110 tiles sharing a synthetic 'alien' mask). Masks that are one
  terrain class almost everywhere repeat legitimately and are kept.
* ``all_background``: masks with no labeled pixel.
* ``constant_image``: images with a single grey level.
"""
import hashlib
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


def repeated_rows(rows, min_count):
    """Index arrays (ascending) of the rows of the 2-D array ``rows`` that occur identically at least ``min_count``
    times, one per distinct row, in the lexicographic order of the rows' bytes (``np.unique(rows, axis=0)``'s).

    Rows are grouped by a digest of their bytes, which reads each row once instead of sorting them
    all; a group is then checked byte for byte, so a digest collision cannot merge different rows.
    """
    groups = {}
    for i, row in enumerate(np.ascontiguousarray(rows)):
        groups.setdefault(hashlib.blake2b(row, digest_size=16).digest(), []).append(i)
    found = []
    for members in groups.values():
        if len(members) < min_count:
            continue
        members = np.asarray(members, dtype=np.int64)
        same = (rows[members] == rows[members[0]]).all(axis=1)
        if same.all():
            found.append(members)
        else:  # a digest collision: split the group by the rows themselves
            _, inverse = np.unique(rows[members], axis=0, return_inverse=True)
            found.extend(m for m in (members[inverse.ravel() == u] for u in np.unique(inverse)) if len(m) >= min_count)
    return sorted(found, key=lambda members: rows[members[0]].tobytes())


def find_outliers(images, masks, min_repeats=MIN_REPEATS, uniform_share=UNIFORM_SHARE):
    """Detect outlier tiles; see the module docstring for the rules.

    ``min_repeats``: a mask shared by at least this many tiles is suspect.
    ``uniform_share``: a repeated mask whose most common terrain class covers at least
    this share of its labeled pixels is a legitimate whole-tile label and kept.
    """
    n = len(masks)
    flat = masks.reshape(n, -1)
    report = OutlierReport(n_tiles=n)
    repeated = []
    for tiles in repeated_rows(flat, min_repeats):
        mask = flat[tiles[0]]
        labeled = mask[mask > 0]
        if labeled.size == 0:
            continue  # all-background masks are reported on their own
        top_share = np.bincount(labeled).max() / labeled.size
        if top_share >= uniform_share:
            continue
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
