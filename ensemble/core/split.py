"""Train/validation split by rover stop (``training_groups``), never by tile when groups exist."""
import warnings

import numpy as np

#: Share of the tiles (whole rover stops) held out for validation unless a run says otherwise.
VAL_FRACTION = 0.15


class LeakWarning(UserWarning):
    """The split is by tile: near-duplicate tiles from one rover stop may fall on both sides."""


def split_indices(n_tiles, groups=None, val_fraction=VAL_FRACTION, seed=0):
    """Return sorted ``(train_idx, val_idx)``; deterministic for a seed.

    With ``groups`` whole groups go to validation (in a seeded random order) until
    at least ``val_fraction`` of the tiles are there, so no group is on both sides.
    Without groups the split is by tile and a :class:`LeakWarning` is issued.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if groups is None:
        warnings.warn(
            "no 'training_groups' in the data: splitting by tile, so near-duplicate tiles "
            "from one rover stop can leak between train and validation",
            LeakWarning,
            stacklevel=2,
        )
        order = rng.permutation(n_tiles)
        n_val = max(1, int(round(val_fraction * n_tiles)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    groups = np.asarray(groups)
    unique, counts = np.unique(groups, return_counts=True)
    if len(unique) < 2:
        raise ValueError("need at least 2 groups to split train/validation by group")
    order = rng.permutation(len(unique))
    cumulative = np.cumsum(counts[order])
    n_groups_val = int(np.searchsorted(cumulative, val_fraction * n_tiles) + 1)
    n_groups_val = min(n_groups_val, len(unique) - 1)
    val_groups = unique[order[:n_groups_val]]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def tiles_per_epoch(samples_per_epoch, train_tiles):
    """Tiles one epoch draws: ``samples_per_epoch``, or every one of the ``train_tiles`` once when it is 0."""
    return samples_per_epoch or train_tiles
