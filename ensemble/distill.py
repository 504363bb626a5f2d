"""The teacher of a distilled network: its class logits of the training tiles, computed once and cached.

A student (:data:`~ensemble.core.classes.STUDENT`) learns from a served strategy of its own run (the teacher,
``distill.teacher``). The teacher sees the clean tiles; its logits are computed once per (run, strategy,
networks and fusers, data, split) with the run's :class:`~ensemble.inference.Predictor` (as served, flip TTA
included where the strategy serves it) and stored as a float16 ``.npy`` in the user's cache
(:func:`~ensemble.core.locations.user_cache_dir`, ``teacher/``): outside the run folder, which is never written
for it, and memory-mapped by the training workers (0.7 GB for 8788 tiles of 64x128). The competition
objective's ``-inf`` class-0 logit is stored as :data:`FLOOR` (float16 has no room for arithmetic on ``-inf``
under a warp's interpolation; the student's loss leaves class 0 out there anyway).
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .core.classes import STUDENT, TUNED_STUDENT
from .core.data import open_npz
from .core.errors import DataError, EnsembleError
from .core.locations import user_cache_dir

#: The stand-in for a ``-inf`` teacher logit in the float16 cache.
FLOOR = -1.0e4
#: Tiles predicted per batch while the cache is made.
BATCH = 256


def teacher_key(folder, strategy, data_sha256, train_idx, extra_key=""):
    """A digest of everything the teacher's logits depend on: the strategy, the recorded checksums of the networks it
    reads and of the input statistics, its fuser's :meth:`~fusion.Fuser.digest` (what it computes, not the file's
    bytes: refitting a fuser that fits nothing rewrites the file with a new duration), the data file, the training
    tiles' indices and ``extra_key`` (the unlabeled tiles' digest). Networks and fusers the teacher does not read
    are left out, so training the student or fitting other fusers keeps the cache."""
    from fusion import FUSERS, load_fuser

    from .inference.loading import source_networks

    checksums = folder.manifest().get("checksums", {})
    sources = FUSERS[strategy].sources if strategy in FUSERS else (strategy,)
    files = [folder.best_path(net) for source in sources for net in source_networks(folder, source)]
    files.append(folder.input_stats_path)
    recorded = {key: checksums.get(key, "") for key in (folder.relative(path) for path in files)}
    fuser = folder.fuser_path(strategy)
    parts = [strategy, data_sha256, json.dumps(recorded, sort_keys=True),
             load_fuser(fuser).digest() if fuser.exists() else "",
             hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes()).hexdigest(), extra_key]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def teacher_cache_path(folder, strategy, data_sha256, train_idx, extra_key=""):
    """Where the teacher's logits of these training tiles are cached."""
    key = teacher_key(folder, strategy, data_sha256, train_idx, extra_key)
    return user_cache_dir() / "teacher" / f"{folder.path.name}-{strategy}-{key}.npy"


def check_teacher(run, strategy):
    """An :class:`EnsembleError` naming ``--teacher`` unless ``strategy`` can be served from ``run``."""
    from .inference import Predictor

    if strategy in (STUDENT, TUNED_STUDENT):
        raise EnsembleError(f"--teacher {strategy}: the student cannot be its own teacher")
    try:
        Predictor(run, strategy)
    except EnsembleError as exc:
        raise EnsembleError(f"--teacher {strategy}: {exc}") from None


def teacher_logits_file(folder, strategy, images, data_sha256, train_idx, *, extra_key="", options=None, log=None):
    """The cached teacher logits (N, 5, H, W) float16 of ``images`` (the training tiles ``train_idx`` of the data
    file, then any unlabeled tiles, whose digest is ``extra_key``), made now if missing: the path of the ``.npy``
    file. Written to a temporary file first, then moved in place, so an interrupted run leaves no half-written
    cache."""
    from .inference import InferenceOptions, Predictor

    path = teacher_cache_path(folder, strategy, data_sha256, train_idx, extra_key)
    if path.exists():
        return path
    try:
        predictor = Predictor(folder.path, strategy, options=options or InferenceOptions())
    except EnsembleError as exc:
        raise EnsembleError(f"--teacher {strategy}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float16, shape=(len(images), 5, *images.shape[1:]))
        for start in range(0, len(images), BATCH):
            logits = predictor.predict_logits(np.asarray(images[start : start + BATCH]))
            out[start : start + len(logits)] = np.nan_to_num(np.asarray(logits, dtype=np.float32), neginf=FLOOR,
                                                              posinf=-FLOOR)
            if log:
                log(f"teacher {strategy}: {start + len(logits)}/{len(images)} training tiles")
        out.flush()
        del out
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path


#: Suffix of a text file listing image paths, one per line, for ``--unlabeled``.
LIST_SUFFIX = ".txt"


def unlabeled_sources(spec):
    """The images ``--unlabeled`` names, as a list of ``(where, float32 0-1 (H, W) image)``: ``PATH.npz:KEY`` (an
    (N, H, W) array or (H, W) image of an ``.npz``: the key must be named, so a data file's ``test_set`` is
    never used by accident), an image file, a folder of images, or a ``.txt`` file listing image paths."""
    from .inference import as_image, as_tiles
    from .inference.images import decode_gray, open_inputs

    path, _, key = str(spec).partition(".npz:")
    if key:
        npz = Path(path + ".npz")
        arrays = open_npz(npz, keys=[key])
        if key not in arrays:
            raise DataError(f"--unlabeled {spec}: {npz} has no key {key!r}")
        raw, where = arrays[key], f"{npz.name}['{key}']"
        if np.ndim(raw) == 2:
            return [(where, as_image(raw, where))]
        tiles = as_tiles(raw, where)
        return [(f"{where}[{i}]", tiles[i]) for i in range(len(tiles))]
    path = Path(spec)
    if path.suffix.lower() == ".npz":
        raise DataError(f"--unlabeled {spec}: name the array, PATH.npz:KEY (e.g. {path.name}:images)")
    if path.suffix.lower() == LIST_SUFFIX and path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise DataError(f"--unlabeled {spec}: the list names no image")
        files = [(path.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
        for file in files:
            if not file.is_file():
                raise DataError(f"--unlabeled {spec}: {file} not found")
        return [(str(f), decode_gray(f).astype(np.float32) / 255.0) for f in files]
    inputs = open_inputs(path)
    return [(inputs.where(i), inputs.image(i)) for i in range(len(inputs))]


def cut_tiles(image, tile_shape, scale=1.0, where="image"):
    """``image`` (H, W) float 0-1 brought to the training scale (``--scale``'s area resampling) and cut into
    non-overlapping tiles of ``tile_shape`` (the remainder at the right and bottom edges left out): (M, h, w)."""
    import torch

    from .inference.windows import to_training_scale

    scaled = np.asarray(to_training_scale(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), scale))
    h, w = tile_shape
    rows, cols = scaled.shape[0] // h, scaled.shape[1] // w
    if rows == 0 or cols == 0:
        raise DataError(f"--unlabeled: {where} is {scaled.shape[0]}x{scaled.shape[1]} at the training scale, smaller "
                        f"than one {h}x{w} tile")
    tiles = scaled[: rows * h, : cols * w].reshape(rows, h, cols, w).swapaxes(1, 2).reshape(-1, h, w)
    return tiles.astype(np.float32)


def unlabeled_tiles_path(settings):
    """The cached tiles of a student's recorded ``distill.unlabeled`` settings; an error naming the source when the
    cache no longer holds them (rerun ``ensemble distill`` with the same ``--unlabeled``: they are cut again)."""
    path = user_cache_dir() / "unlabeled" / f"{settings['sha256'][:20]}.npy"
    if not path.exists():
        raise EnsembleError(f"{path}: the unlabeled tiles of {settings['source']} are not in the cache; rerun with "
                            f"--unlabeled {settings['source']}")
    return path


def unlabeled_tiles(spec, tile_shape, scale=1.0, *, log=None):
    """The tiles of ``--unlabeled`` (:func:`unlabeled_sources`, :func:`cut_tiles`), cached as a float32 ``.npy`` in
    the user's cache under their content's digest; returns the settings a student records:
    ``{"source", "scale", "sha256", "tiles"}``."""
    tiles = np.concatenate([cut_tiles(image, tile_shape, scale, where) for where, image in unlabeled_sources(spec)])
    digest = hashlib.sha256(tiles.tobytes()).hexdigest()
    path = user_cache_dir() / "unlabeled" / f"{digest[:20]}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temp, "wb") as fh:
            np.save(fh, tiles)
        os.replace(temp, path)
    if log:
        log(f"unlabeled: {len(tiles)} tiles of {tile_shape[0]}x{tile_shape[1]} from {spec}")
    return {"source": str(spec), "scale": float(scale), "sha256": digest, "tiles": int(len(tiles))}
