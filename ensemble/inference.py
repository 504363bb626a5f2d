"""Load trained networks from a run folder and compute their logits in batches.

Members are loaded from ``RUN/members/<class>/best.pt`` and checked to agree with each
other and with the run's manifest (classes, tile size, data hash). The validation
logits of the members are cached in ``RUN/cache`` so fusers can be refitted cheaply.
"""
import json

import numpy as np
import torch

from fusion import load_fuser
from members.checkpoint import load_checkpoint, model_from_checkpoint
from members.stacked import StackedUNet
from members.training import BASELINE

from .classes import CLASS_NAMES, NUM_CLASSES
from .errors import RunError
from .fileio import atomic_path, sha256_file, write_json_atomic
from .objectives import for_objective
from .runfolder import RunFolder

#: Default tiles per inference batch: on 2 CPU cores batches of 16 run the members 1.4x faster
#: than batches of 64 (``scripts/bench.py``: larger batches' activations spill out of the caches).
BATCH_SIZE = 16


def check_run_data(folder, data):
    """Refuse ``data`` if the run's manifest records another data file hash."""
    manifest = folder.manifest()
    if manifest["data"]["sha256"] != data.sha256:
        raise RunError(
            f"{folder.manifest_path}: run was trained on {manifest['data']['file']} "
            f"(sha256 {manifest['data']['sha256'][:12]}…), but {data.path} has sha256 {data.sha256[:12]}…"
        )
    return manifest


def _network_checkpoint(folder, name):
    path = folder.best_path(name)
    if not path.exists():
        what = "the multiclass baseline" if name == BASELINE else f"member {name!r}"
        raise RunError(f"{path}: missing; {what} has not been trained in {folder.path} (run ensemble "
                       f"{'baseline' if name == BASELINE else 'train'} --run {folder.path})")
    return path


def load_network_state(folder, name, device="cpu"):
    """A network's ``best.pt`` state, verified against the manifest's sha256 and data hash."""
    path = folder.verify(_network_checkpoint(folder, name))
    state = load_checkpoint(path, map_location=device)
    trained_on = state.get("data_sha256")
    expected = folder.manifest()["data"]["sha256"]
    if trained_on is not None and trained_on != expected:
        raise RunError(
            f"{path}: was trained on data sha256 {trained_on[:12]}…, but the run's data is {expected[:12]}…; "
            "networks from different data files cannot be combined"
        )
    return path, state


def load_run_fuser(run, strategy):
    """The fitted fuser ``RUN/fusion/<strategy>.pt``, verified against the manifest's sha256."""
    folder = RunFolder(run)
    path = folder.fuser_path(strategy)
    if not path.exists():
        raise RunError(f"{path}: missing; fit it with: ensemble fuse --run {folder.path} --strategy {strategy}")
    return load_fuser(folder.verify(path))


def channels_last(model):
    """``model`` with its weights in channels-last memory layout (in place; returned for chaining).

    oneDNN's CPU convolutions run the U-Nets about 1.4-1.5x faster in this layout than in
    NCHW at inference batch sizes (``scripts/bench.py --parts steps``); the outputs agree
    within float rounding.
    """
    return model.to(memory_format=torch.channels_last)


def load_members(run, device="cpu"):
    """The five members of ``run`` as a list of eval-mode U-Nets in class order, checked for consistency."""
    folder = RunFolder(run)
    manifest = folder.manifest()
    if manifest.get("classes") != list(CLASS_NAMES):
        raise RunError(f"{folder.manifest_path}: classes {manifest.get('classes')} differ from {list(CLASS_NAMES)}")
    models = []
    for target, name in enumerate(CLASS_NAMES):
        path, state = load_network_state(folder, name, device)
        if state.get("target") != target or state["model_config"].get("out_channels") != 1:
            raise RunError(f"{path}: is not the one-vs-rest member for class {target} ({name})")
        models.append(model_from_checkpoint(state, device))
    depths = {m.config.depth for m in models}
    if len(depths) != 1:
        raise RunError(f"{folder.path}: members have different depths {sorted(depths)}; retrain them together")
    return models


def load_baseline(run, device="cpu"):
    """The multiclass baseline of ``run`` (eval mode, channels-last), emitting class logits as its objective implies.

    Under ``competition`` its class-0 logit is -inf (:func:`~ensemble.objectives.for_objective`):
    it was trained over classes 1-4 and never predicts 0.
    """
    folder = RunFolder(run)
    path, state = load_network_state(folder, BASELINE, device)
    if state["model_config"].get("out_channels") != NUM_CLASSES:
        raise RunError(f"{path}: is not a {NUM_CLASSES}-class baseline")
    return for_objective(channels_last(model_from_checkpoint(state, device)), folder.objective())


def check_tile_shape(folder, shape):
    """Refuse images whose tile size differs from the one the run was trained on."""
    trained = tuple(folder.manifest()["data"]["tile_shape"])
    if tuple(shape) != trained:
        raise RunError(
            f"{folder.path}: networks were trained on {trained[0]}x{trained[1]} tiles, "
            f"but the images are {shape[0]}x{shape[1]}"
        )


def logits_batches(forward, images, batch_size=BATCH_SIZE, device="cpu", tta="none"):
    """Yield ``(start, logits)`` of ``forward`` for float images (N, H, W) in 0-1, batch by batch.

    Logits come back as float32 CPU tensors. ``tta="flip"`` averages the logits of the
    image and of its horizontal mirror.
    """
    for start in range(0, len(images), batch_size):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None].to(device)
            logits = _tta_logits(forward, x, tta)
        yield start, logits


def members_forward(models, stack=True):
    """One function images -> member logits (B, K, H, W): the members stacked into one grouped network
    (:meth:`~members.stacked.StackedUNet.for_inference`), or, with ``stack=False``, run one by one
    (channels-last, in place)."""
    if stack:
        return StackedUNet.from_members(models).for_inference()
    models = [channels_last(m) for m in models]
    return lambda t: torch.cat([m(t) for m in models], dim=1)


def member_logits_batches(models, images, batch_size=BATCH_SIZE, device="cpu", tta="none", stack=True):
    """Yield ``(start, member_logits)`` (B, 5, H, W) of the members, batch by batch (stacked unless ``stack=False``)."""
    return logits_batches(members_forward(models, stack), images, batch_size, device, tta)


def baseline_logits_batches(model, images, batch_size=BATCH_SIZE, device="cpu", tta="none"):
    """Yield ``(start, class_logits)`` (B, 5, H, W) of the baseline, batch by batch."""
    return logits_batches(model, images, batch_size, device, tta)


def _tta_logits(forward, x, tta):
    if tta == "none":
        return forward(x).float().contiguous().cpu()
    if tta == "flip":
        return ((forward(x) + forward(x.flip(-1)).flip(-1)) / 2).float().contiguous().cpu()
    raise ValueError(f"unknown tta {tta!r}; valid: none, flip")


def all_logits(batches, n):
    """Concatenate the batches of a ``*_logits_batches`` generator into one (N, C, H, W) array."""
    out = None
    for start, logits in batches:
        if out is None:
            out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
        out[start : start + len(logits)] = logits.numpy()
    return out


def _member_hashes(folder):
    return {name: sha256_file(_network_checkpoint(folder, name)) for name in CLASS_NAMES}


def cached_val_logits(run, data, tile_ids, device="cpu", log=None, stack=True):
    """Member logits (N, 5, H, W) of the run's validation tiles and their ids, computed once and cached.

    The cache is reused only while it was made from the same member checkpoints
    (sha256) and the same validation tiles. ``stack=False`` computes it with the members
    one by one instead of stacked (equal within 1e-5).
    """
    folder = RunFolder(run)
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    ids = np.asarray(tile_ids)[val_idx]
    meta_path = folder.cache_path("meta")
    hashes = _member_hashes(folder)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("members") == hashes and meta.get("tiles") == len(val_idx):
            cached_ids = np.load(folder.cache_path("ids"), allow_pickle=False)
            if np.array_equal(cached_ids, ids):
                return np.load(folder.cache_path("logits"), mmap_mode="r", allow_pickle=False), ids, val_idx
    if log:
        log(f"computing member logits for {len(val_idx)} validation tiles (cached in {folder.cache_dir})")
    models = load_members(run, device)
    batches = member_logits_batches(models, data.images[val_idx], device=device, stack=stack)
    logits = all_logits(batches, len(val_idx))
    for which, array in (("logits", logits), ("ids", ids)):
        with atomic_path(folder.cache_path(which)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
    write_json_atomic(meta_path, {"members": hashes, "tiles": int(len(val_idx))})
    return logits, ids, val_idx
