"""Score predicted masks against true masks in the three IoU conventions (``ensemble score``).

Predictions: a Kaggle submission CSV (what ``ensemble predict`` writes), or an ``.npy`` /
``.npz`` holding one (N, H, W) integer array of class ids. Truth: an ``.npy`` / ``.npz``
holding one (N, H, W) integer array (beside it, one array of N ids may name the masks), or a
Kaggle-layout file (its ``training_set[:, 1]``). ``FILE.npz:KEY`` names the array of an ``.npz``
whose arrays leave a doubt.

Masks of any size: predictions as a folder of class-id PNGs (what ``ensemble predict --masks``
writes: mode L, values 0-4), scored against a folder of such PNGs or an ``.npz`` of true masks
(single (H, W) arrays named by stem, or one (N, H, W) array whose stems are its row numbers),
matched by stem; every pixel of every image counts once.

CSV rows are matched to truth rows by id: by row number when every id is one (``0`` .. ``N-1``,
what Kaggle scores and ``predict`` writes for an ``.npz``), else by the truth's ids when its file
has them; otherwise they are taken in file order. Missing, extra and repeated ids are named.
"""
import collections
import zipfile
from pathlib import Path

import numpy as np

from ..core.classes import CLASS_NAMES, NUM_CLASSES, TERRAIN_CLASSES
from ..core.data import open_npz
from ..core.errors import DataError
from ..core.metrics import CONVENTIONS, background_on_labeled, confusion_matrix, iou_per_class, mean_iou
from ..reporting.submission import read_submission


def split_key(spec):
    """``"FILE.npz:KEY"`` -> ``(Path(FILE.npz), "KEY")``; anything else -> ``(Path(spec), None)``."""
    spec = str(spec)
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key and not Path(spec).exists():
        return Path(head), key
    return Path(spec), None


def _is_mask_array(array):
    return array.ndim == 3 and array.dtype.kind in "iu" and 0 not in array.shape


def _pick_array(path, arrays, key, what):
    """The mask array of an ``.npz``: ``key``, else a Kaggle ``training_set``'s masks, else its only array, else
    its only (N, H, W) integer array."""
    keys = ", ".join(sorted(arrays)) or "none"
    if key is not None:
        if key not in arrays:
            raise DataError(f"{path}: no key {key!r} (keys found: {keys})")
        return arrays[key], f"{path.name}:{key}"
    training = arrays.get("training_set")
    if training is not None and training.ndim == 4 and training.shape[1] == 2:
        return training[:, 1], f"{path.name}:training_set[:, 1]"
    if len(arrays) == 1:
        (only_key, value), = arrays.items()
        return value, f"{path.name}:{only_key}"
    masks = [k for k, v in arrays.items() if _is_mask_array(v)]
    if len(masks) == 1:
        return arrays[masks[0]], f"{path.name}:{masks[0]}"
    raise DataError(f"{path}: holds several arrays ({keys}), {len(masks)} of them (N, H, W) integer; name the "
                    f"{what} with {path.name}:KEY")


def _ids_beside(arrays, n):
    """The one array of ``n`` string ids beside the masks of an ``.npz`` (``test_ids``, ``training_ids``, ...),
    else None."""
    found = [v for v in arrays.values() if v.ndim == 1 and len(v) == n and v.dtype.kind in "US"]
    return [str(t) for t in found[0]] if len(found) == 1 else None


def _check_masks(masks, where):
    """Check an (N, H, W) array of integer class ids 0-4; return it as int64."""
    if masks.dtype.kind not in "iu":
        raise DataError(f"{where}: dtype {masks.dtype}, expected integer class ids 0-{NUM_CLASSES - 1}")
    if masks.ndim != 3 or 0 in masks.shape:
        raise DataError(f"{where}: shape {masks.shape}, expected (N, H, W) masks")
    bad = (masks < 0) | (masks >= NUM_CLASSES)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise DataError(f"{where}: {int(bad.sum())} values outside 0-{NUM_CLASSES - 1} (first in tile {first})")
    return masks.astype(np.int64, copy=False)


def read_array_masks(spec, what="masks"):
    """(N, H, W) int64 masks from ``.npy``, ``.npz`` or ``FILE.npz:KEY``; :class:`DataError` otherwise."""
    return read_masks_and_ids(spec, what)[0]


def read_masks_and_ids(spec, what="masks"):
    """``(masks (N, H, W) int64, ids or None)``: :func:`read_array_masks` and the ids an ``.npz`` holds beside
    them (one array of N strings; a Kaggle file's ``training_ids``)."""
    path, key = split_key(spec)
    if not path.is_file():
        raise DataError(f"{path}: not found (expected an .npy or .npz file of {what})")
    if path.suffix.lower() == ".npy":
        if key is not None:
            raise DataError(f"{path}: an .npy file holds one array; leave out :{key}")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{path}: not a readable .npy array ({reason[:200]})") from None
        return _check_masks(array, path.name), None
    try:
        arrays = open_npz(path)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    array, where = _pick_array(path, arrays, key, what)
    masks = _check_masks(array, where)
    return masks, _ids_beside(arrays, len(masks))


def _named(ids, limit=5):
    ids = sorted(ids, key=lambda t: (len(t), t))
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _match_rows(path, ids, labels, truth_ids, n_truth, masks_spec):
    """The CSV's rows in the truth's order: by row number when every id is one (what Kaggle scores), else by the
    truth's ids when its file has them, else as they are.

    Missing, extra or repeated ids raise :class:`DataError` naming them.
    """
    if ids and all(t.isdigit() for t in ids):
        truth_ids = [str(i) for i in range(n_truth)]  # Kaggle ids: the truth's row numbers
    if truth_ids is None or not ids:
        return labels
    repeated = [t for t, count in collections.Counter(ids).items() if count > 1]
    if repeated:
        raise DataError(f"{path}: ids appear more than once: {_named(repeated)}")
    missing, extra = set(truth_ids) - set(ids), set(ids) - set(truth_ids)
    if missing or extra:
        parts = ([f"missing ids {_named(missing)}"] if missing else []) + ([f"ids not in the truth {_named(extra)}"]
                                                                          if extra else [])
        raise DataError(f"{path}: {len(ids)} predicted tiles, but {masks_spec} holds {n_truth} true masks: "
                        f"{'; '.join(parts)}")
    row = {t: i for i, t in enumerate(ids)}
    return labels[[row[t] for t in truth_ids]]


def read_predictions(spec, tile_shape, truth_ids=None, n_truth=None, masks_spec="the truth"):
    """Predicted masks (N, H, W) int64 from a submission CSV or an array file; ``tile_shape`` is the truth's (H, W).

    CSV rows are put in the truth's order (:func:`_match_rows`) when ``n_truth`` is given."""
    path, _ = split_key(spec)
    if path.suffix.lower() != ".csv":
        return read_array_masks(spec, "predicted masks")
    if not path.is_file():
        raise DataError(f"{path}: not found (expected a submission CSV)")
    try:
        ids, labels = read_submission(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: not a readable submission CSV ({message[:200]})") from None
    height, width = tile_shape
    if labels.shape[1] != height * width:
        raise DataError(f"{path}: rows have {labels.shape[1]} labels, but the true tiles are {height}x{width} "
                        f"= {height * width} pixels")
    if n_truth is not None:
        labels = _match_rows(path, list(ids), labels, truth_ids, n_truth, masks_spec)
    elif ids and sorted(ids, key=lambda t: (len(t), t)) == [str(i) for i in range(len(ids))]:
        labels = labels[np.argsort([int(t) for t in ids])]  # Kaggle ids: row numbers
    return labels.reshape(len(labels), height, width).astype(np.int64)


def read_mask_pngs(folder, what="masks"):
    """``{stem: mask (H, W) int64}`` of the class-id PNGs in ``folder``; :class:`DataError` naming a bad file."""
    from PIL import Image

    folder = Path(folder)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise DataError(f"{folder}: folder holds no PNG {what}")
    masks = {}
    for path in entries:
        if path.is_dir() or path.suffix.lower() != ".png":
            raise DataError(f"{path}: not a .png file; the folder of {what} must hold class-id PNGs only")
        try:
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                array = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(path), "file")
            raise DataError(f"{path}: not a decodable PNG ({reason})") from None
        if array.ndim != 2 or mode not in ("L", "P", "I", "I;16"):
            raise DataError(f"{path}: a {mode} image; expected a class-id PNG (one channel, values "
                            f"0-{NUM_CLASSES - 1}, as ensemble predict --masks writes)")
        masks[path.stem] = _check_masks(array[None], path.name)[0]
    return masks


def _named_masks(spec, what):
    """``{stem: mask}`` from a folder of PNGs or an ``.npz`` / ``.npy`` (single masks by key, or rows by number)."""
    path, key = split_key(spec)
    if path.is_dir():
        return read_mask_pngs(path, what)
    if path.is_file() and path.suffix.lower() == ".npz" and key is None:
        arrays = open_npz(path)
        if arrays and all(np.ndim(a) == 2 for a in arrays.values()):
            return {k: _check_masks(np.asarray(a)[None], f"{path.name}:{k}")[0] for k, a in sorted(arrays.items())}
    return {str(i): mask for i, mask in enumerate(read_array_masks(spec, what))}


def score_named(pred, truth, pred_where, truth_where):
    """Score ``{stem: mask}`` predictions against ``{stem: mask}`` truth of any sizes, matched by stem."""
    missing = sorted(set(pred) - set(truth))
    if missing:
        raise DataError(f"{pred_where}: {len(missing)} predicted masks have no true mask in {truth_where} "
                        f"(first: {missing[0]!r}); stems must match")
    unpredicted = sorted(set(truth) - set(pred))
    if unpredicted:
        raise DataError(f"{truth_where}: {len(unpredicted)} true masks have no prediction in {pred_where} "
                        f"(first: {unpredicted[0]!r}); stems must match")
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for stem in sorted(pred):
        if pred[stem].shape != truth[stem].shape:
            raise DataError(f"{pred_where}: {stem} is {pred[stem].shape[0]}x{pred[stem].shape[1]}, but its true mask "
                            f"in {truth_where} is {truth[stem].shape[0]}x{truth[stem].shape[1]}")
        cm += confusion_matrix(truth[stem][None], pred[stem][None])
    return scores_of_confusion(cm, len(pred), unit="images")


def scores_of_confusion(cm, n, unit="tiles"):
    """What :func:`score_masks` returns, from one summed confusion matrix ``cm`` of ``n`` tiles or images.

    ``unit`` says what was counted, for the printed line: ``"tiles"`` (rows of an array or a CSV) or
    ``"images"`` (whole masks of any size, matched by stem)."""
    result = {}
    for convention in CONVENTIONS:
        iou = iou_per_class(cm, convention)
        result[convention] = {**{CLASS_NAMES[c]: float(iou[c]) for c in TERRAIN_CLASSES},
                              "mean": mean_iou(cm, convention)}
    result["tiles"] = int(n)
    result["unit"] = unit
    result["class0_on_labeled"] = background_on_labeled(cm)
    return result


def score_masks(pred, truth):
    """Per-class IoU and mean IoU of ``pred`` against ``truth`` (N, H, W) in every convention.

    Returns ``{convention: {"soil", "bedrock", "sand", "big_rock", "mean"}}`` for the
    conventions of :mod:`ensemble.core.metrics` (NaN where a class has no union), plus
    ``"tiles"`` (how many masks), ``"unit"`` (``"tiles"``) and ``"class0_on_labeled"`` (share of labeled pixels
    predicted as 0).
    """
    return scores_of_confusion(confusion_matrix(truth, pred), len(truth))


def score_files(pred, masks):
    """Read ``masks`` (truth) and ``pred`` and score them (see :func:`score_masks`).

    ``pred`` a folder of class-id PNGs: scored against ``masks`` matched by stem (:func:`score_named`).
    """
    if Path(str(pred)).is_dir():
        return score_named(read_mask_pngs(pred, "predicted masks"), _named_masks(masks, "true masks"), pred, masks)
    truth, truth_ids = read_masks_and_ids(masks, "true masks")
    predicted = read_predictions(pred, truth.shape[1:], truth_ids, len(truth), masks)
    if predicted.shape[1:] != truth.shape[1:]:
        raise DataError(f"{pred}: tiles are {predicted.shape[1]}x{predicted.shape[2]}, but the true masks in "
                        f"{masks} are {truth.shape[1]}x{truth.shape[2]}")
    if len(predicted) != len(truth):
        raise DataError(f"{pred}: {len(predicted)} predicted tiles, but {masks} holds {len(truth)} true masks")
    return score_masks(predicted, truth)
