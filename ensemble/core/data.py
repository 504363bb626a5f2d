"""Read and validate Mars terrain tiles in the Kaggle ``mars_for_students.npz`` layout.

Keys: ``training_set`` (N, 2, H, W) with image and mask, optional ``test_set``
(M, H, W), optional ``training_groups`` (N,) rover stops and optional
``training_ids`` / ``test_ids``. Images may be uint8 0-255 or float in 0-255 or
0-1; they are normalised to float32 0-1. Masks are integer class ids 0-4.
Every problem raises :class:`~ensemble.core.errors.DataError` with a one-line message.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from .classes import NUM_CLASSES
from .errors import DataError
from .fileio import sha256_file
from .locations import DATA_ENV, DEFAULT_DATA_NAME, data_candidates


@dataclass
class MarsData:
    """Validated tiles. ``images`` float32 (N, H, W) in 0-1, ``masks`` uint8 (N, H, W)."""

    path: Path
    sha256: str
    images: np.ndarray
    masks: np.ndarray
    groups: np.ndarray | None = None
    ids: np.ndarray | None = None
    test_images: np.ndarray | None = None
    test_ids: np.ndarray | None = None

    @property
    def tile_shape(self):
        """(H, W) of one tile."""
        return tuple(self.images.shape[1:])

    def __len__(self):
        return len(self.images)


def resolve_data_path(path: str | PathLike[str] | None = None) -> Path:
    """Pick the data file: ``path``, else ``$MARS_DATA``, else the first of
    :func:`~ensemble.core.locations.data_candidates` that exists.

    Raises :class:`DataError` listing where it looked when none of them names a file.
    """
    if path:
        return Path(path)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    candidates = data_candidates()
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"no data file: --data not given, ${DATA_ENV} not set, and no {DEFAULT_DATA_NAME} at {looked}; "
                    f"pass --data PATH (the Kaggle mars_for_students.npz works too) or set ${DATA_ENV}")


def open_npz(path, keys=None, or_all=False):
    """Open an ``.npz`` archive without pickle; return ``{key: array}`` or raise :class:`DataError`.

    ``keys`` (optional): read only these members (those the archive has); the others are not
    decompressed (``predict`` reads ``test_set`` alone, not the training tiles). With ``or_all``, an
    archive holding none of ``keys`` gives every member instead. The file is opened once.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (pass --data PATH or set ${DATA_ENV})")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an .npz file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            if magic.startswith(b"\x93NUMPY"):
                raise DataError(f"{path}: is a single .npy array, expected an .npz archive")
            if not magic.startswith(b"PK"):
                raise DataError(f"{path}: not a readable .npz archive (no zip header)")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as archive:
                wanted = [key for key in archive.files if keys is None or key in keys]
                if or_all and not wanted:
                    wanted = list(archive.files)
                arrays = {key: archive[key] for key in wanted}
        for key, value in arrays.items():
            if not isinstance(value, np.ndarray):
                raise DataError(f"{path}: member {key!r} is not a numpy array")
        return arrays
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds object arrays that need pickle; refusing to load them") from None
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, MemoryError, TypeError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from None


def npz_keys(path):
    """The member names of the ``.npz`` archive ``path`` (read from its index, no array decompressed)."""
    with np.load(path, allow_pickle=False) as archive:
        return list(archive.files)


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def normalize_images(array, where):
    """Return images as float32 in 0-1 from uint8 0-255 or float 0-255 / 0-1; validate values."""
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{where}: images have dtype {array.dtype}, expected uint8 or float")
    if array.size == 0:
        raise DataError(f"{where}: holds no pixels (shape {array.shape})")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    values = array.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        tile = int(np.argwhere(bad.reshape(len(values), -1).any(axis=1))[0, 0])
        raise DataError(f"{where}: {int(bad.sum())} NaN or inf pixels (first in tile {tile})")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise DataError(f"{where}: pixel values span [{low:g}, {high:g}], expected 0-255 or 0-1")
    if high > 1.0:
        values /= 255.0
    return values


def validate_masks(array, where):
    """Return masks as uint8 after checking they are integer class ids 0-4."""
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{where}: masks have dtype {array.dtype}, expected integers 0-{NUM_CLASSES - 1}")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)):
            bad = ~finite | (array != np.round(np.where(finite, array, 0)))
            tile = int(np.argwhere(bad.reshape(len(array), -1).any(axis=1))[0, 0])
            raise DataError(f"{where}: {int(bad.sum())} mask values are not whole class ids (first in tile {tile})")
    bad = (array < 0) | (array >= NUM_CLASSES)
    if bad.any():
        tile = int(np.argwhere(bad.reshape(len(array), -1).any(axis=1))[0, 0])
        raise DataError(
            f"{where}: {int(bad.sum())} mask values outside 0-{NUM_CLASSES - 1} (first in tile {tile})"
        )
    return array.astype(np.uint8)


def _check_rank(array, rank, where, expected):
    if array.ndim != rank:
        raise DataError(f"{where}: shape {array.shape}, expected {expected}")
    if 0 in array.shape:
        raise DataError(f"{where}: is empty (shape {array.shape}), expected {expected}")


def _per_tile(array, n, where, what):
    if array.ndim != 1 or len(array) != n:
        raise DataError(f"{where}: shape {array.shape}, expected ({n},) {what}, one per tile")
    return array


#: The last file loaded, by (path, mtime, size, require_masks): a command reads and hashes its data once.
_LOADED: dict[tuple, MarsData] = {}


def load_data(path: str | PathLike[str] | MarsData | None = None, require_masks: bool = True) -> MarsData:
    """Load and validate a Kaggle-layout ``.npz``; return :class:`MarsData`.

    ``path`` defaults to :func:`resolve_data_path`; a :class:`MarsData` is returned as it is.
    With ``require_masks=False`` a file holding only ``test_set`` is accepted (its ``images``
    are then the test images). The last file loaded is kept while its modification time and
    size are unchanged, so the steps of one command (train, baseline, fuse, evaluate) read and
    hash it once; treat the arrays as read-only.
    """
    if isinstance(path, MarsData):
        return path
    path = resolve_data_path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, require_masks)
    except OSError:
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    data = _read_data(path, require_masks)
    _LOADED.clear()
    if key is not None:
        _LOADED[key] = data
    return data


def _read_data(path, require_masks):
    """Read and validate ``path`` (see :func:`load_data`)."""
    arrays = open_npz(path)
    name = path.name
    if "training_set" not in arrays and (require_masks or "test_set" not in arrays):
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{name}: missing key 'training_set' (keys found: {found})")
    data = MarsData(path=path, sha256=sha256_file(path), images=None, masks=None)
    if "training_set" in arrays:
        train = arrays["training_set"]
        expected = "(N, 2, H, W): image and mask per tile"
        _check_rank(train, 4, f"{name}['training_set']", expected)
        if train.shape[1] != 2:
            raise DataError(
                f"{name}['training_set']: {train.shape[1]} planes per tile (shape {train.shape}), expected {expected}"
            )
        data.images = normalize_images(train[:, 0], f"{name}['training_set'] images")
        data.masks = validate_masks(train[:, 1], f"{name}['training_set'] masks")
        n = len(train)
        if "training_groups" in arrays:
            groups = _per_tile(arrays["training_groups"], n, f"{name}['training_groups']", "rover-stop ids")
            if not np.issubdtype(groups.dtype, np.integer):
                raise DataError(f"{name}['training_groups']: dtype {groups.dtype}, expected integers")
            data.groups = groups.astype(np.int64)
        if "training_ids" in arrays:
            data.ids = _per_tile(arrays["training_ids"], n, f"{name}['training_ids']", "tile ids").astype(str)
    if "test_set" in arrays:
        test = arrays["test_set"]
        _check_rank(test, 3, f"{name}['test_set']", "(M, H, W) images")
        data.test_images = normalize_images(test, f"{name}['test_set']")
        if data.images is not None and test.shape[1:] != data.images.shape[1:]:
            raise DataError(
                f"{name}['test_set']: tiles are {test.shape[1]}x{test.shape[2]}, "
                f"training tiles are {data.images.shape[1]}x{data.images.shape[2]}"
            )
        if "test_ids" in arrays:
            data.test_ids = _per_tile(arrays["test_ids"], len(test), f"{name}['test_ids']", "tile ids").astype(str)
    if data.images is None:
        data.images, data.test_images = data.test_images, None
        data.ids, data.test_ids = data.test_ids, None
    return data


def tile_ids(data):
    """Stable string ids of the training tiles: the file's ids, else ``tile-<index>``."""
    if data.ids is not None:
        return np.asarray(data.ids, dtype=str)
    return np.array([f"tile-{i}" for i in range(len(data))])
