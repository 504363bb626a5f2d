"""Data files: inspect one, and write a copy without outlier tiles."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.data import load_data, open_npz, resolve_data_path
from ..core.datasummary import summarize
from ..core.errors import DataError
from ..core.fileio import atomic_path, check_output
from ..core.outliers import MIN_REPEATS, UNIFORM_SHARE, find_outliers
from ..core.types import PathArg
from ..core.wording import api_function


@api_function
def inspect_data(data: PathArg | None = None, min_repeats: int = MIN_REPEATS,
                 uniform_share: float = UNIFORM_SHARE) -> dict[str, Any]:
    """Validate a data file and return its summary dict (counts, class shares, groups, outliers)."""
    return summarize(load_data(data), min_repeats=min_repeats, uniform_share=uniform_share)


@api_function
def clean_data(out: PathArg, data: PathArg | None = None, min_repeats: int = MIN_REPEATS,
               uniform_share: float = UNIFORM_SHARE) -> dict[str, Any]:
    """Write a copy of the data file without outlier tiles, same keys, groups and ids aligned.

    Returns ``{"kept": int, "removed": int, "reasons": {reason: count}, "out": str}``.
    """
    check_output("--out", out, "a file name for the cleaned .npz")
    path = resolve_data_path(data)
    loaded = load_data(path)
    report = find_outliers(loaded.images, loaded.masks, min_repeats=min_repeats, uniform_share=uniform_share)
    keep = report.keep_mask()
    if not keep.any():
        raise DataError(f"{path}: every tile is an outlier; nothing would be left to write")
    arrays = open_npz(path)
    per_tile = {"training_set", "training_groups", "training_ids"}
    cleaned = {k: (v[keep] if k in per_tile else v) for k, v in arrays.items()}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **cleaned)
    return {
        "out": str(out),
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "reasons": {reason: int(len(idx)) for reason, idx in report.reasons.items()},
    }
