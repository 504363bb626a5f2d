"""Kaggle submission CSV: ``id,0,1,...,n_pixels-1`` then one row of row-major labels per tile.

Rows are formatted with numpy: every label is a single digit (classes 0-4), so a batch of
masks becomes one byte buffer of digits and commas without per-value string formatting.
"""
import contextlib
import os

import numpy as np

from ..core.classes import NUM_CLASSES
from ..core.fileio import atomic_path

_COMMA, _NEWLINE, _ZERO = ord(","), ord("\n"), ord("0")


def _header(n_pixels):
    return ("id," + ",".join(map(str, range(n_pixels))) + "\n").encode("ascii")


class SubmissionWriter:
    """Context manager streaming a submission CSV to ``path`` with ``n_pixels`` label columns.

    Rows go to a temporary file beside ``path`` that replaces ``path`` only when the block
    exits without an exception; otherwise the temporary file is removed and an existing
    ``path`` is left untouched.
    """

    def __init__(self, path, n_pixels):
        """Prepare a writer for tiles of ``n_pixels`` pixels; nothing is written before ``with``."""
        if n_pixels <= 0:
            raise ValueError(f"n_pixels must be positive, got {n_pixels}")
        self.path, self.n_pixels, self.rows = path, int(n_pixels), 0
        self._stack = self._fh = None

    def __enter__(self):
        """Open the temporary file and write the header."""
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._fh = stack.enter_context(open(tmp, "wb"))
            self._fh.write(_header(self.n_pixels))
            self._stack = stack.pop_all()
        return self

    def write(self, ids, masks):
        """Append one row per tile: ``ids`` (B,) and integer masks (B, H, W), flattened in C order."""
        masks = np.asarray(masks)
        flat = masks.reshape(len(masks), -1)
        if len(ids) != len(flat):
            raise ValueError(f"{len(ids)} ids for {len(flat)} masks")
        if flat.shape[1] != self.n_pixels:
            raise ValueError(f"masks have {flat.shape[1]} pixels, the submission has {self.n_pixels}")
        if flat.size and (flat.min() < 0 or flat.max() >= NUM_CLASSES):
            raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}, got {flat.min()}..{flat.max()}")
        rows = np.full((len(flat), 2 * self.n_pixels), _COMMA, dtype=np.uint8)
        rows[:, 0::2] = flat + _ZERO
        rows[:, -1] = _NEWLINE
        for tile_id, row in zip(ids, rows):
            self._fh.write(f"{tile_id},".encode("ascii"))
            self._fh.write(row.tobytes())
        self.rows += len(flat)

    def __exit__(self, exc_type, exc, tb):
        """Flush and move the file into place on success; discard it on an exception."""
        if exc_type is None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        stack, self._stack, self._fh = self._stack, None, None
        return stack.__exit__(exc_type, exc, tb)


def read_submission(path):
    """Read a submission CSV; return ``(ids, labels)``: ids as strings, labels (N, n_pixels) uint8."""
    with open(path, "rb") as fh:
        header = fh.readline()
        n_pixels = header.count(b",")
        if header.rstrip(b"\r\n") != _header(n_pixels).rstrip(b"\n"):
            raise ValueError(f"{path}: header is not 'id,0,1,...'")
        ids, rows = [], []
        for number, line in enumerate(fh, start=2):
            tile_id, _, labels = line.rstrip(b"\r\n").partition(b",")
            values = np.frombuffer(labels, dtype=np.uint8)
            if len(values) != 2 * n_pixels - 1 or (values[1::2] != _COMMA).any():
                raise ValueError(f"{path}:{number}: expected {n_pixels} single-digit labels")
            digits = values[0::2] - _ZERO
            if (digits >= NUM_CLASSES).any():
                raise ValueError(f"{path}:{number}: labels must lie in 0..{NUM_CLASSES - 1}")
            ids.append(tile_id.decode("ascii"))
            rows.append(digits)
    return ids, np.stack(rows) if rows else np.zeros((0, n_pixels), dtype=np.uint8)
