"""Predict masks for new tiles and stream them into a Kaggle submission CSV.

Inputs: the ``test_set`` of a Kaggle-layout ``.npz`` (``--data``), or ``--images``: an ``.npz``
with ``test_set`` (else ``images``) of shape (M, H, W), or a folder of grayscale PNG tiles.

Ids: tiles from an ``.npz`` are numbered by row, ``"0"`` .. ``"M-1"``, because the Kaggle
competition scores submissions by the row index of ``test_set`` (its sample submission uses
0..M-1); a ``test_ids`` key holds source-image names and is not used as the CSV id. Tiles from
a PNG folder are read in file-name order (plain string sort: ``10.png`` before ``2.png``) and
their ids are the file stems. PNGs are decoded with Pillow (already used for the figures;
torchvision's PNG decoding is deprecated since 0.29): colour is converted to luma, alpha
dropped, 16-bit scaled to 8 bit.

Prediction streams: tiles are normalised, run through the networks, fused, written as CSV rows
and optional PNGs one batch at a time, so memory does not grow with the number of tiles (only
the raw uint8 tiles are held; float input is normalised once as a whole because its 0-255 vs
0-1 scale is decided from the whole array).
"""
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusion.base import channel_argmax

from .core.classes import NUM_CLASSES
from .core.data import npz_keys, open_npz, resolve_data_path
from .core.errors import DataError
from .inference import BATCH_SIZE, Predictor, _Tiles, as_tiles, check_tile_shape
from .render import write_gray_png, write_mask_png
from .submission import SubmissionWriter

_NPZ_KEYS = ("test_set", "images")
_BAD_ID_CHARS = set(',"\r\n')


def _check_id(tile_id, where):
    if not tile_id.isascii() or _BAD_ID_CHARS & set(tile_id):
        raise DataError(f"{where}: file name {tile_id!r} cannot be a submission id (ASCII without commas or quotes)")


def _decode_gray_png(path):
    """One PNG as a grayscale uint8 (H, W) array: colour is converted to luma, alpha dropped, 16 bit scaled."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DataError(f"{path}: not a PNG file (it is {image.format})")
            image.load()
            if image.mode.startswith("I"):  # 16-bit grayscale: 0-65535 to 0-255
                return np.round(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(path), "file")
        raise DataError(f"{path}: not a decodable PNG ({reason})") from None


def _read_png_folder(folder):
    """Decode every PNG of ``folder`` as grayscale uint8; return ``(tiles (N, H, W), ids)``."""
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    if not entries:
        raise DataError(f"{folder}: folder holds no PNG files")
    for path in entries:
        if path.is_dir() or path.suffix.lower() != ".png":
            raise DataError(f"{folder}: {path.name} is not a .png file; the folder must hold only PNG tiles")
    tiles, first = None, None
    for i, path in enumerate(entries):
        _check_id(path.stem, path)
        image = _decode_gray_png(path)
        if tiles is None:
            first = path
            tiles = np.empty((len(entries), *image.shape), dtype=np.uint8)
        elif image.shape != tiles.shape[1:]:
            raise DataError(
                f"{path}: tile is {image.shape[0]}x{image.shape[1]} pixels, but {first.name} is "
                f"{tiles.shape[1]}x{tiles.shape[2]}; all tiles must have the same size"
            )
        tiles[i] = image
    return tiles, [p.stem for p in entries]


def _open_tiles(path, folders=True):
    """Open an ``.npz`` (or, with ``folders``, a PNG folder: ``--images``) as a lazily normalised :class:`_Tiles` and ids.

    Without ``folders`` (``--data``) a missing path or a folder gets the data file's own message.
    """
    path = Path(path)
    if folders and not path.exists():
        raise DataError(f"{path}: not found (--images expects an .npz file or a folder of PNG tiles)")
    if folders and path.is_dir():
        raw, ids = _read_png_folder(path)
        return _Tiles(raw, str(path)), ids
    arrays = open_npz(path, keys=_NPZ_KEYS)
    key = next((k for k in _NPZ_KEYS if k in arrays), None)
    if key is None:
        found = ", ".join(sorted(npz_keys(path))) or "none"
        raise DataError(f"{path.name}: no 'test_set' or 'images' key to predict (keys found: {found})")
    raw, where = arrays.pop(key), f"{path.name}['{key}']"
    del arrays
    if raw.ndim != 3 or 0 in raw.shape:
        raise DataError(f"{where}: shape {raw.shape}, expected (M, H, W) grayscale tiles")
    return _Tiles(raw, where), [str(i) for i in range(len(raw))]


def load_images(path):
    """Read tiles to predict; return ``(images float32 (N, H, W) in 0-1, ids list[str])``.

    ``path`` is an ``.npz`` (key ``test_set``, else ``images``; ids are the row indices
    ``"0"`` .. ``"N-1"`` as Kaggle expects) or a folder of PNG tiles (sorted by file name,
    decoded as grayscale, ids are the file stems). Raises :class:`DataError` for a missing
    path, an empty folder, a non-PNG or undecodable file (named), tiles of mixed sizes, or an
    ``.npz`` without those keys.
    """
    tiles, ids = _open_tiles(path)
    return tiles[:], ids


def entropy_map(probs):
    """Per-pixel entropy of class probabilities (B, 5, H, W), divided by log(5): (B, H, W) in [0, 1]."""
    return torch.special.entr(probs).sum(dim=1) / math.log(NUM_CLASSES)


def disagreement_map(member_logits, labels):
    """Share of members whose one-vs-rest vote contradicts the fused label: (B, H, W) in {0, 0.2, .., 1}.

    Member k votes "class k" where its sigmoid exceeds 0.5 (logit > 0). For a pixel fused to
    class c, member c should vote yes and the other four no; every member that votes
    otherwise counts as disagreeing.
    """
    votes = member_logits > 0
    expected = torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).bool()
    return (votes != expected).float().mean(dim=1)


def _write_batch(writer, batch_ids, class_logits, member_logits, png_dir, uncertainty_dir):
    """Write one batch: CSV rows, then the optional mask and uncertainty PNGs."""
    labels = channel_argmax(class_logits)
    masks = labels.to(torch.uint8).numpy()
    writer.write(batch_ids, masks)
    if png_dir is not None:
        for tile_id, mask in zip(batch_ids, masks):
            write_mask_png(mask, png_dir / f"{tile_id}.png")
    if uncertainty_dir is not None:
        entropy = entropy_map(torch.softmax(class_logits, dim=1)).numpy()
        disagreement = None if member_logits is None else disagreement_map(member_logits, labels).numpy()
        for i, tile_id in enumerate(batch_ids):
            write_gray_png(entropy[i], uncertainty_dir / f"{tile_id}_entropy.png")
            if disagreement is not None:
                write_gray_png(disagreement[i], uncertainty_dir / f"{tile_id}_disagreement.png")


def predict_run(run, strategy="learned", data=None, images=None, out="submission.csv", png_dir=None,
                uncertainty_dir=None, tta="none", batch_size=BATCH_SIZE, device="cpu", stack=None, engine="auto",
                log=None, note=None):
    """Predict masks with ``strategy`` of ``run`` and write a Kaggle submission CSV to ``out``.

    ``strategy``: any fuser fitted in ``RUN/fusion`` or ``"baseline"``; another name raises
    :class:`EnsembleError` listing the run's strategies. Tiles: ``images`` (a path, see
    :func:`load_images`, or an array (N, H, W) uint8 / float whose ids are the row numbers) if given, else the ``test_set`` of ``data`` (the Kaggle ``.npz``,
    default :func:`~ensemble.core.data.resolve_data_path`). Their size must match the run
    (:class:`RunError` otherwise).

    Works in batches of ``batch_size``: member logits -> fused logits (or the baseline's
    logits) -> labels (argmax, identical to ``Fuser.predict``) -> CSV rows (header
    ``id,0,..,H*W-1``, row-major labels). With ``png_dir`` each tile's coloured mask is
    written as ``<id>.png``; with ``uncertainty_dir`` ``<id>_entropy.png`` (entropy of the
    class probabilities / log 5, see :func:`entropy_map`) and, for ensemble strategies,
    ``<id>_disagreement.png`` (see :func:`disagreement_map`), both grayscale with 255 = 1.
    Memory stays flat in the number of tiles. The CSV appears only when complete.

    ``note`` (a callable) is called once the inputs are checked, before any tile is predicted.

    Returns ``{"rows": n, "out": path, "strategy": strategy, "seconds": s}``.
    """
    started = time.perf_counter()
    log = log or (lambda line: None)
    predictor = Predictor(run, strategy, device, tta, batch_size, stack, engine, log)
    if isinstance(images, np.ndarray):
        tiles, ids, source = as_tiles(images), [str(i) for i in range(len(images))], "an array"
    else:
        source = Path(images) if images is not None else resolve_data_path(data)
        tiles, ids = _open_tiles(source, folders=images is not None)
    height, width = tiles.shape[1:]
    check_tile_shape(predictor.folder, (height, width))  # before the CSV is opened
    if note:  # what the caller has to say once the inputs are known to be good (the default strategy)
        note()
    png_dir = Path(png_dir) if png_dir else None
    uncertainty_dir = Path(uncertainty_dir) if uncertainty_dir else None
    log(f"predicting {len(tiles)} tiles ({height}x{width}) from {source} with {strategy}, tta {tta}, "
        f"engine {predictor.engine}")
    with torch.inference_mode(), SubmissionWriter(out, height * width) as writer:
        for start, class_logits, member_logits in predictor.logit_batches(tiles):
            _write_batch(writer, ids[start : start + len(class_logits)], class_logits, member_logits, png_dir,
                         uncertainty_dir)
            del class_logits, member_logits  # drop this batch before the next one is computed
    seconds = time.perf_counter() - started
    return {"rows": writer.rows, "out": str(out), "strategy": strategy, "seconds": round(seconds, 3)}
