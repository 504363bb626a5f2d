"""Each network's training history as a CSV table, rewritten atomically after every epoch.

``<network>/history.csv`` holds one row per finished epoch, so a run can be watched (``ensemble status``, the
run's ``progress.png``, any spreadsheet or ``pandas.read_csv``) while it trains. The same rows are kept in the
network's checkpoint, so a resumed network rewrites the whole table. A network that has started but finished no
epoch has a table with the header only.
"""
import contextlib
import csv
import fcntl
import io
import math
from pathlib import Path

from .classes import CLASS_NAMES
from .errors import EnsembleError
from .fileio import write_bytes_atomic
from .runfolder import HISTORY_CSV, TRAINING_LOCK

#: Per-class IoU columns: one per class id, empty where the network does not score that class.
IOU_COLUMNS = tuple(f"iou_{name}" for name in CLASS_NAMES)
#: Columns of ``history.csv``, in order. ``val_score`` is the early-stopping score: a member's binary IoU of its
#: class, a multiclass network's mIoU in the run's objective.
COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_score", *IOU_COLUMNS, "seconds", "val_seconds",
           "tiles_per_s")
#: Keys of a history row (as kept in the checkpoint) that have another name in the table.
_ROW_KEYS = {"train_loss": "loss", "val_score": "val_iou"}


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def history_table(rows):
    """The CSV text of history ``rows`` (dicts as the trainer keeps them; missing keys are empty cells)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        ious = row.get("iou") or {}
        values = {**{key: row.get(_ROW_KEYS.get(key, key)) for key in COLUMNS},
                  **{column: ious.get(name) for name, column in zip(CLASS_NAMES, IOU_COLUMNS)}}
        writer.writerow([_cell(values[key]) for key in COLUMNS])
    return out.getvalue()


def write_history(network_dir, rows):
    """Write ``network_dir/history.csv`` from ``rows``, atomically."""
    write_bytes_atomic(Path(network_dir) / HISTORY_CSV, history_table(rows).encode())


def read_history(path):
    """The rows of a ``history.csv`` as dicts of floats (``None`` for empty cells); ``[]`` if it has none."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return [{key: (float(value) if value not in ("", None) else None) for key, value in row.items()}
                for row in reader]


class TrainingLock:
    """An exclusive lock on ``<network>/.training.lock`` while one process trains the network: a second process
    that tries to train it at the same time gets a clear error instead of interleaved checkpoints, and
    :func:`is_training` tells ``ensemble status`` that the network is running. The lock dies with its process."""

    def __init__(self, network_dir):
        path = Path(network_dir) / TRAINING_LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = open(path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise EnsembleError(f"{path.parent}: this network is being trained by another process; "
                                "wait for it, or stop it first") from None

    def release(self):
        """Remove the lock file and release the lock (a finished network has none)."""
        if self.handle.closed:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.handle.close()


def is_training(network_dir):
    """True while some process holds the network's :class:`TrainingLock`."""
    path = Path(network_dir) / TRAINING_LOCK
    try:
        handle = open(path)
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
