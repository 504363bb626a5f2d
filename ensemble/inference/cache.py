"""The validation logits a run's fusers are fitted and scored on, computed once per source and cached in the run
(``RUN/cache``; a shipped run's in the user's cache): what ``fuse`` and ``evaluate`` read."""
import json

import numpy as np

from ..core.data import tile_ids
from ..core.fileio import atomic_path, write_json_atomic
from ..core.runfolder import RunFolder
from .engines import resolve_engine
from .loading import MEMBERS, check_run_data, network_hashes, source_networks
from .options import InferenceOptions
from .predictor import Predictor


def cached_val_logits(run, data, ids_of_tiles, *, options=None, log=None, source=MEMBERS, **settings):
    """Logits (N, 5, H, W) of one source (default the members) on the run's validation tiles, and their ids,
    computed once and cached.

    The cache is reused only while it was made from the same checkpoints (sha256), the same
    validation tiles and the same engine (:mod:`ensemble.inference.engines`; the engines agree within 1e-5).
    ``stack`` (:func:`resolve_stack`) says whether the members run stacked or one by one (equal
    within 1e-5). ``options`` (:class:`~ensemble.inference.options.InferenceOptions`, or its fields as
    keywords) say how the networks run; the cache is made without TTA. Returns ``(logits, ids, val_idx)``.
    """
    options = InferenceOptions.of(options, **settings)
    engine = resolve_engine(options.engine, options.device)
    folder = RunFolder(run)
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    ids = np.asarray(ids_of_tiles)[val_idx]
    meta_path = folder.cache_path("meta", source)
    hashes = network_hashes(folder, source_networks(folder, source))
    key = "members" if source == MEMBERS else "networks"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get(key) == hashes and meta.get("tiles") == len(val_idx) and meta.get("engine") == engine:
            cached_ids = np.load(folder.cache_path("ids"), allow_pickle=False)
            if np.array_equal(cached_ids, ids):
                return np.load(folder.cache_path("logits", source), mmap_mode="r", allow_pickle=False), ids, val_idx
    what = "member" if source == MEMBERS else f"{source}"
    if log:
        log(f"computing {what} logits for {len(val_idx)} validation tiles (cached in {folder.cache_dir})")
    predictor = Predictor(folder.path, None if source == MEMBERS else source,
                          options=options.replace(tta="none", engine=engine), log=log)
    images = data.images[val_idx]
    logits = predictor.predict_member_logits(images) if source == MEMBERS else predictor.predict_logits(images)
    for which, array in (("logits", logits), ("ids", ids)):
        with atomic_path(folder.cache_path(which, source)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
    write_json_atomic(meta_path, {key: hashes, "tiles": int(len(val_idx)), "engine": engine})
    return logits, ids, val_idx


def source_logits(folder, data, sources, *, options=None, log=None):
    """``{source: validation logits}`` of each source (cached in the run), and the validation ids and indices."""
    out, ids, val_idx = {}, None, None
    for source in sources:
        out[source], ids, val_idx = cached_val_logits(folder.path, data, tile_ids(data), options=options, log=log,
                                                      source=source)
    return out, ids, val_idx


def fuser_inputs(logits, sources):
    """The fuser input: the sources' logits concatenated along the channels (the array itself for one source)."""
    if len(sources) == 1:
        return logits[sources[0]]
    return np.concatenate([np.asarray(logits[source]) for source in sources], axis=1)
