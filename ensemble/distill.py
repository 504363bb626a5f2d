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
from .core.errors import EnsembleError
from .core.locations import user_cache_dir

#: The stand-in for a ``-inf`` teacher logit in the float16 cache.
FLOOR = -1.0e4
#: Tiles predicted per batch while the cache is made.
BATCH = 256


def teacher_key(folder, strategy, data_sha256, train_idx):
    """A digest of everything the teacher's logits depend on: the strategy, the run's recorded checksums (networks
    and fusers), the data file and the training tiles' indices."""
    manifest = folder.manifest()
    fuser = folder.fuser_path(strategy)
    parts = [strategy, data_sha256, json.dumps(manifest.get("checksums", {}), sort_keys=True),
             hashlib.sha256(fuser.read_bytes()).hexdigest() if fuser.exists() else "",
             hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes()).hexdigest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def teacher_cache_path(folder, strategy, data_sha256, train_idx):
    """Where the teacher's logits of these training tiles are cached."""
    return user_cache_dir() / "teacher" / f"{folder.path.name}-{strategy}-{teacher_key(folder, strategy, data_sha256, train_idx)}.npy"


def check_teacher(run, strategy):
    """An :class:`EnsembleError` naming ``--teacher`` unless ``strategy`` can be served from ``run``."""
    from .inference import Predictor

    if strategy in (STUDENT, TUNED_STUDENT):
        raise EnsembleError(f"--teacher {strategy}: the student cannot be its own teacher")
    try:
        Predictor(run, strategy)
    except EnsembleError as exc:
        raise EnsembleError(f"--teacher {strategy}: {exc}") from None


def teacher_logits_file(folder, strategy, images, data_sha256, train_idx, *, options=None, log=None):
    """The cached teacher logits (N, 5, H, W) float16 of ``images`` (the training tiles ``train_idx`` of the data
    file), made now if missing: the path of the ``.npy`` file. Written to a temporary file first, then moved in
    place, so an interrupted run leaves no half-written cache."""
    from .inference import InferenceOptions, Predictor

    path = teacher_cache_path(folder, strategy, data_sha256, train_idx)
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
