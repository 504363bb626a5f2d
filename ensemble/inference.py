"""The one way down from a run folder to logits: :class:`Predictor`.

A :class:`Predictor` loads and verifies a run's networks once: members from
``RUN/members/<class>/best.pt``, checked to agree with each other and with the run's manifest
(classes, tile size, data hash), the baseline and its replicas, the control, and a fitted fuser.
What a strategy runs is a list of *sources* (:data:`MEMBERS`, ``baseline``, ``baseline_1``, ...,
``control``), each a module from images to five logit maps; a fuser reads their concatenation. ``ensemble predict``,
``evaluate``, ``export``, the fusers' logits cache (:func:`cached_val_logits`, the members'
validation logits in ``RUN/cache`` so fusers can be refitted cheaply) and the notebook API all
run their networks through it.
"""
import json

import numpy as np
import torch
from torch import nn

from fusion import STRATEGIES, load_fuser
from fusion.base import channel_argmax
from members.checkpoint import load_checkpoint, model_from_checkpoint
from members.stacked import StackedUNet

from .core.augment import mirror_averaged_logits
from .core.classes import BASELINE, CLASS_NAMES, CONTROL, NUM_CLASSES, is_baseline_like, is_baseline_replica, is_control
from .core.data import normalize_images
from .core.errors import DataError, EnsembleError, RunError
from .core.fileio import atomic_path, sha256_file, write_json_atomic
from .core.objectives import for_objective
from .core.runfolder import RunFolder
from .engines import OnnxForward, cached_graph, export_onnx, resolve_engine
from .windows import (DEFAULT_STEP, as_image_tensor, check_scale, check_step, resize_logits, stitched_logits,
                      to_training_scale)

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


#: The source name of the five members' logits (channel k: member of class k).
MEMBERS = "members"


def _network_checkpoint(folder, name):
    path = folder.best_path(name)
    if not path.exists():
        if is_baseline_like(name):
            what, verb = ("the multiclass baseline", "baseline") if name == BASELINE else \
                (f"the baseline's replica {name!r}", f"baseline --replicas {int(name.rpartition('_')[2]) + 1}")
        elif is_control(name):
            what, verb = f"control network {name!r}", "control"
        else:
            what, verb = f"member {name!r}", "train"
        raise RunError(f"{path}: missing; {what} has not been trained in {folder.path} (run ensemble "
                       f"{verb} --run {folder.path})")
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


def load_multiclass(run, name, device="cpu"):
    """Multiclass net ``name`` of ``run`` (eval mode, channels-last), emitting class logits as its objective implies.

    Under ``competition`` its class-0 logit is -inf (:func:`~ensemble.core.objectives.for_objective`):
    it was trained over classes 1-4 and never predicts 0.
    """
    folder = RunFolder(run)
    path, state = load_network_state(folder, name, device)
    if state["model_config"].get("out_channels") != NUM_CLASSES:
        raise RunError(f"{path}: is not a {NUM_CLASSES}-class network")
    return for_objective(channels_last(model_from_checkpoint(state, device)), folder.objective())


class SoftmaxAverage(nn.Module):
    """Multiclass networks averaged by softmax (nnU-Net's way): class logits = log of the mean probabilities.

    A class every network gives probability 0 (class 0 under ``competition``) gets logit -inf.
    """

    def __init__(self, models):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x):
        """Class logits (B, C, H, W): the log of the networks' mean softmax."""
        return torch.log(torch.stack([torch.softmax(m(x), dim=1) for m in self.models]).mean(0))


def load_control(run, device="cpu"):
    """The ensembling control of ``run``: its multiclass networks averaged by softmax (:class:`SoftmaxAverage`)."""
    folder = RunFolder(run)
    names = folder.control_names()
    if not names:
        raise RunError(f"{folder.path}: has no ensembling control; train it with: ensemble control --run {folder.path}")
    return SoftmaxAverage([load_multiclass(run, name, device) for name in names]).eval()


def source_networks(folder, source):
    """The networks behind a source: the five members, the control's nets, or the one multiclass net."""
    if source == MEMBERS:
        return list(CLASS_NAMES)
    if source == CONTROL:
        return folder.control_names()
    return [source]


def available_sources(folder):
    """The sources ``folder`` has trained: members, baseline, its replicas, control (each when present)."""
    found = [MEMBERS] if all(folder.best_path(n).exists() for n in CLASS_NAMES) else []
    found += [BASELINE] if folder.best_path(BASELINE).exists() else []
    found += folder.baseline_replica_names()
    return found + ([CONTROL] if folder.control_names() else [])


def load_source(folder, source, device="cpu", stack=False):
    """The module images -> five logit maps of ``source`` (members stacked or one by one)."""
    if source == MEMBERS:
        return members_forward(load_members(folder.path, device), stack)
    if source == CONTROL:
        return load_control(folder.path, device)
    return load_multiclass(folder.path, source, device)


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


class MembersOneByOne(nn.Module):
    """Networks run one after the other on the same images, their logits concatenated: (B, K, H, W).

    The members one by one (K = 5), or several sources side by side for a fuser that reads them all.
    """

    def __init__(self, models):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x):
        """Logits (B, K, H, W) in the order of the networks."""
        return torch.cat([m(x) for m in self.members], dim=1)


def concatenated(forwards):
    """One callable images -> the concatenated logits of ``forwards`` (itself when there is one)."""
    if len(forwards) == 1:
        return forwards[0]
    return lambda x: torch.cat([forward(x) for forward in forwards], dim=1)


def resolve_stack(stack, engine, device):
    """``stack`` as given, or for ``None`` the layout measured faster on ``device``: stacked on a GPU only.

    On 2 CPU cores the whole ``ensemble predict --strategy learned`` on the 1587 test tiles took
    13.3 s one by one against 14.5 s stacked with onnxruntime (every one-by-one run faster than every
    stacked one), and eager PyTorch runs the members one by one at 174 against 107 tiles/s
    (README, Speed). ``engine`` is accepted for callers that know it; the choice does not depend on it.
    """
    if stack is not None:
        return bool(stack)
    return str(device).startswith("cuda")


def members_forward(models, stack=True):
    """One module images -> member logits (B, K, H, W): the members stacked into one grouped network
    (:meth:`~members.stacked.StackedUNet.for_inference`), or, with ``stack=False``, run one by one
    (channels-last, in place)."""
    if stack:
        return StackedUNet.from_members(models).for_inference()
    return MembersOneByOne([channels_last(m) for m in models]).eval()


def _tta_logits(forward, x, tta):
    if tta == "none":
        return forward(x).float().contiguous().cpu()
    if tta == "flip":
        return mirror_averaged_logits(forward, x).float().contiguous().cpu()
    raise ValueError(f"unknown tta {tta!r}; valid: none, flip")


def all_logits(batches, n):
    """Concatenate the batches of a ``*_logits_batches`` generator into one (N, C, H, W) array."""
    out = None
    for start, logits in batches:
        if out is None:
            out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
        out[start : start + len(logits)] = logits.numpy()
    return out


TTA_CHOICES = ("none", "flip")


class _Tiles:
    """Raw tiles (N, H, W) that ``len()`` and slicing turn into float32 0-1 batches on the fly.

    uint8 tiles stay uint8 and are divided by 255 per batch; any other dtype is validated and
    normalised as a whole by :func:`~ensemble.core.data.normalize_images`.
    """

    def __init__(self, raw, where):
        self.where = where
        self.raw = raw if raw.dtype == np.uint8 else normalize_images(raw, where)

    def __len__(self):
        return len(self.raw)

    @property
    def shape(self):
        """(N, H, W)."""
        return self.raw.shape

    def __getitem__(self, index):
        chunk = self.raw[index]
        return normalize_images(chunk, self.where) if chunk.dtype == np.uint8 else chunk


def check_tta(tta):
    """Refuse an unknown test-time augmentation with :class:`EnsembleError` naming ``--tta``."""
    if tta not in TTA_CHOICES:
        raise EnsembleError(f"--tta: unknown {tta!r}; valid: {', '.join(TTA_CHOICES)}")


def fitted_strategies(run):
    """Names of the fusers fitted in ``run`` (``RUN/fusion/<name>.pt``), in :data:`fusion.STRATEGIES` order."""
    names = [name for name in RunFolder(run).fuser_names() if name != BASELINE]
    rank = {name: i for i, name in enumerate(STRATEGIES)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def check_strategy(folder, strategy):
    """Refuse a strategy the run cannot serve: the run's servable models, and how to fit a missing fuser (into a
    run of the user's own when this one is shipped) or, for an unknown name, every valid one."""
    available = fitted_strategies(folder.path)
    replicas = folder.baseline_replica_names()
    if strategy == BASELINE or strategy in available or strategy in replicas:
        return
    controls = [CONTROL] if folder.control_names() else []
    if strategy == CONTROL and controls:
        return
    listed = ", ".join([*available, BASELINE, *replicas, *controls])
    if strategy == CONTROL:
        hint = f"train it with: ensemble control --run {folder.path}"
    elif strategy in STRATEGIES and folder.read_only:
        hint = (f"the shipped run is read-only; fit it into a copy: cp -r {folder.path} runs/mine && "
                f"ensemble fuse --run runs/mine --strategy {strategy}")
    elif strategy in STRATEGIES:
        hint = f"fit it with: ensemble fuse --run {folder.path} --strategy {strategy}"
    else:
        hint = f"valid strategies: {', '.join([*STRATEGIES, BASELINE, CONTROL])}"
    raise EnsembleError(f"--strategy: {strategy!r} is not available in {folder.path} (it serves: {listed}); {hint}")


#: The strategy served when a run has no evaluation report naming its best.
FALLBACK_STRATEGY = "learned"


def default_strategy(run, log=None):
    """The strategy served when none is named: the run's best by its evaluation report, else ``learned``.

    ``ensemble evaluate`` records the best strategy (highest cross-fitted headline mIoU among the
    models ``predict`` can serve) in ``RUN/evaluation/report.json``; a run not evaluated yet, or whose
    recorded best is no longer servable, gets ``learned`` when fitted, else the baseline. Says which
    to ``log``.
    """
    folder = RunFolder(run)
    report = folder.evaluation_dir / "report.json"
    best = _recorded_table(folder).get("best_strategy")
    fitted = fitted_strategies(folder.path)
    servable = [*fitted, BASELINE, *([CONTROL] if folder.control_names() else [])]
    if best in servable:
        chosen, why = best, f"the run's best by cross-fitted validation mIoU ({report})"
    else:
        chosen = FALLBACK_STRATEGY if FALLBACK_STRATEGY in fitted else (fitted[0] if fitted else BASELINE)
        why = "no evaluation report names a best strategy" if best is None else f"the recorded best {best!r} is not fitted"
    if log:
        log(f"strategy {chosen}: {why}")
    return chosen


def _recorded_table(folder):
    """The ``table`` of the run's evaluation report, or ``{}`` when there is none readable."""
    report = folder.evaluation_dir / "report.json"
    if not report.is_file():
        return {}
    try:
        table = json.loads(report.read_text()).get("table", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return table if isinstance(table, dict) else {}


def default_tta(run, strategy, log=None):
    """The TTA served with ``strategy`` when none is named: flip where ``ensemble evaluate --tta-gain`` found
    its cross-fitted gain's 95 % interval above 0 for that model (``table.tta_gain`` of the run's report),
    else none. Says which and why to ``log``.
    """
    folder = RunFolder(run)
    gain = _recorded_table(folder).get("tta_gain") or {}
    row = next((r for r in gain.get("rows", []) if isinstance(r, dict) and r.get("model") == strategy), None)
    if row is None:
        chosen, why = "none", "no flip measurement recorded for it (ensemble evaluate --tta-gain)"
    else:
        chosen = "flip" if row.get("default") == "flip" else "none"
        try:
            gain = f"{row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"
        except (KeyError, TypeError, ValueError):  # an undefined gain is stored as null
            gain = "undefined"
        why = f"flip - none on validation {gain} ({folder.evaluation_dir / 'report.json'})"
    if log:
        log(f"tta {chosen} for {strategy}: {why}")
    return chosen


def as_image(raw, where="image"):
    """One image (H, W), uint8 0-255 or float 0-1 / 0-255, as float32 0-1; :class:`DataError` for anything else."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or 0 in raw.shape:
        raise DataError(f"{where}: shape {raw.shape}, expected a grayscale image (H, W) with pixels")
    return normalize_images(raw[None], where)[0]


def _image_list(images):
    """``(single, images)``: one (H, W) image, a list of them, or an (N, H, W) array as float 0-1 images."""
    if isinstance(images, _Tiles):
        return False, (images[i] for i in range(len(images)))
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        array = np.asarray(images)
        if array.ndim == 2:
            return True, [as_image(array)]
        tiles = as_tiles(array)
        return False, (tiles[i] for i in range(len(tiles)))
    if isinstance(images, (list, tuple)):
        return False, (as_image(image, f"images[{i}]") for i, image in enumerate(images))
    raise DataError(f"images: got {type(images).__name__}, expected an array (H, W) or (N, H, W) or a list of arrays")


def as_tiles(images, where="images"):
    """Wrap an array of tiles (N, H, W), uint8 0-255 or float 0-1 / 0-255, as a lazily normalised :class:`_Tiles`."""
    raw = np.asarray(images)
    if raw.ndim != 3 or 0 in raw.shape:
        raise DataError(f"{where}: shape {raw.shape}, expected (N, H, W) grayscale tiles")
    return _Tiles(raw, where)


class Predictor:
    """Built once from a run folder and a strategy, it serves every prediction.

    Like nnU-Net's ``nnUNetPredictor`` and smp's ``predict()``: the constructor loads and
    verifies every checkpoint (sha256 against the manifest) and the fuser once, and holds the
    device, batch size, test-time augmentation and execution path (members stacked or one by
    one). ``strategy`` is a fuser fitted in ``RUN/fusion`` (it names the sources it reads: the
    members, the baseline, its replicas), ``"baseline"``, ``"control"`` (the ensembling control's
    multiclass nets averaged by softmax), or ``None`` for the members alone (their logits, no
    fuser: what the member-level fusers are fitted and evaluated on). Tiles are arrays (N, H, W),
    uint8 0-255 or float 0-1 / 0-255, of the run's tile size; they are processed in batches of
    ``batch_size`` under ``torch.inference_mode()``. The class logits follow the run's objective
    (under ``competition`` class 0 has logit -inf, probability 0).

    ``predict``, ``predict_proba`` and ``predict_logits`` also take images of any size: one (H, W)
    array, a list of arrays of different sizes, or an (N, H, W) array of another size than the
    run's tiles. Those go one at a time through :mod:`ensemble.windows`: brought to the training
    scale (``scale``: input pixels per training pixel), covered by Gaussian-weighted windows
    ``step`` tiles apart whose source logits are stitched, fused, brought back to the input size.
    Results come back in the input's form: one array for one image, a list for a list.

    ``predict`` / ``predict_proba`` / ``predict_logits`` / ``predict_member_logits`` /
    ``predict_source_logits`` serve ``ensemble predict``, ``evaluate``, the fusers' logits cache
    and the notebook API; ``export`` writes the program of ``ensemble export``.
    """

    def __init__(self, run, strategy="learned", device="cpu", tta="none", batch_size=BATCH_SIZE, stack=None,
                 engine="auto", log=None, scale=1.0, step=DEFAULT_STEP):
        check_tta(tta)
        self.scale, self.step = check_scale(scale), check_step(step)
        self.windows_run = 0  # windows (tiles) through the networks so far: the progress counter
        if int(batch_size) < 1:
            raise EnsembleError(f"--batch-size: must be at least 1, got {batch_size}")
        self.folder = RunFolder(run)
        manifest = self.folder.manifest()
        if strategy is not None:
            check_strategy(self.folder, strategy)
        self.engine = resolve_engine(engine, device)
        self.stack = resolve_stack(stack, self.engine, device)
        self.strategy, self.device, self.tta, self.batch_size = strategy, device, tta, int(batch_size)
        self.objective = self.folder.objective()
        self.tile_shape = tuple(manifest["data"]["tile_shape"])
        self.fuser, self.members = None, None
        if strategy in (BASELINE, CONTROL) or (strategy is not None and is_baseline_replica(strategy)):
            self.sources = (strategy,)
        elif strategy is None:
            self.sources = (MEMBERS,)
        else:
            self.fuser = load_run_fuser(self.folder.path, strategy)
            self.sources = tuple(self.fuser.sources)
        if MEMBERS in self.sources:
            self.members = load_members(self.folder.path, device)
        forwards = [self._source_forward(source, log) for source in self.sources]
        self._forward = concatenated(forwards)

    def _make_source(self, source):
        """A fresh PyTorch module of ``source`` (the members from the loaded ones)."""
        if source == MEMBERS:
            return members_forward(self.members, self.stack)
        return load_source(self.folder, source, self.device)

    def _source_forward(self, source, log):
        """The forward of one source: an onnxruntime session of its cached graph, or the PyTorch module.

        The PyTorch module is built only where it runs or is exported, not when a cached graph serves.
        """
        if self.engine != "onnxruntime":
            return self._make_source(source)
        graph = source
        if source == MEMBERS:
            graph = "members" if self.stack else "members_one_by_one"
        return self._onnx_forward(graph, source_networks(self.folder, source), lambda: self._make_source(source), log)

    def _onnx_forward(self, graph, names, make, log):
        """The module ``make()`` as an onnxruntime session; exported (built) once and cached in the run."""
        checksums = self.folder.manifest().get("checksums", {})
        sources = {}
        for name in names:
            key = self.folder.relative(self.folder.best_path(name))
            sources[key] = checksums.get(key) or sha256_file(self.folder.best_path(name))
        example = torch.rand((2, 1, *self.tile_shape), generator=torch.Generator().manual_seed(0))
        return OnnxForward(cached_graph(self.folder, graph, sources, lambda path: export_onnx(make(), example, path),
                                        log))

    def _member_slice(self, input_logits):
        if MEMBERS not in self.sources:
            return None
        first = self.sources.index(MEMBERS) * NUM_CLASSES
        return input_logits[:, first : first + NUM_CLASSES]

    def logit_batches(self, tiles):
        """Yield ``(start, class_logits, member_logits)`` (B, 5, H, W) float32 CPU tensors, batch by batch.

        ``tiles`` is an array (N, H, W) or a lazily normalised tile source. Member logits are
        ``None`` when the strategy does not run the members; class logits are ``None`` for the
        members alone (``strategy=None``).
        """
        for start, input_logits in self._input_batches(tiles):
            self.windows_run += len(input_logits)
            yield start, self._fused(input_logits), self._member_slice(input_logits)
            del input_logits  # drop this batch before the next one is computed

    def _fused(self, input_logits):
        """Class logits of the sources' logits: the fuser's, the single net's, or ``None`` for the members alone."""
        if self.fuser is not None:
            return self.fuser.predict_logits(input_logits)
        return None if self.strategy is None else input_logits

    def fits_tiles(self, shape):
        """True when images of ``shape`` (H, W) are the run's tiles at scale 1: batched, no windows."""
        return tuple(shape) == self.tile_shape and self.scale == 1

    def _window_logits(self, windows):
        return _tta_logits(self._forward, windows.to(self.device), self.tta)

    def stitched_source_logits(self, image):
        """The sources' logits (1, 5 per source, h, w) over one float 0-1 image (H, W) at the training scale.

        The image is resampled by ``scale`` and covered by sliding windows (:mod:`ensemble.windows`);
        the logits a fuser reads are stitched before it reads them.
        """
        with torch.inference_mode():
            small = to_training_scale(as_image_tensor(image), self.scale)
            logits, windows = stitched_logits(self._window_logits, small, self.tile_shape, self.step,
                                              self.batch_size)
        self.windows_run += windows
        return logits[None]

    def image_logits(self, image, members=True, resize=True):
        """``(class_logits, member_logits)`` (1, 5, H, W) float32 of one float 0-1 image (H, W) of any size.

        Either is ``None`` like in :meth:`logit_batches`; member logits also without ``members`` (not
        brought back to the image's size when nobody reads them). Both are brought back to the image's size,
        or, with ``resize=False``, left at the training scale for the caller to resize band by band
        (:func:`~ensemble.windows.resized_bands`).
        """
        with torch.inference_mode():
            input_logits = self.stitched_source_logits(image)
            class_logits = self._fused(input_logits)
            member_logits = self._member_slice(input_logits) if members else None
            if not resize:
                return class_logits, member_logits
            size = np.shape(image)
            return tuple(None if t is None else resize_logits(t, size) for t in (class_logits, member_logits))

    def _per_image(self, images, which, convert):
        """``convert(class or member logits (N, 5, H, W))`` of every image, in the input's form."""
        single, sequence = _image_list(images)
        out = []
        for raw in sequence:
            class_logits, member_logits = self.image_logits(raw)
            out.append(convert(class_logits if which == "class" else member_logits)[0])
        if single:
            return out[0]
        return out if not isinstance(images, np.ndarray) else np.stack(out)

    def _batched(self, images):
        """True for an (N, H, W) array of the run's tiles at scale 1: the batched path of :meth:`logit_batches`."""
        return isinstance(images, (np.ndarray, _Tiles)) and len(np.shape(images)) == 3 and \
            self.fits_tiles(np.shape(images)[1:])

    def _input_batches(self, tiles):
        tiles = tiles if isinstance(tiles, _Tiles) else as_tiles(tiles)
        check_tile_shape(self.folder, tiles.shape[1:])
        yield from logits_batches(self._forward, tiles, self.batch_size, self.device, self.tta)

    def _collect(self, images, which):
        self._require(which)
        if not self._batched(images):
            return self._per_image(images, which, lambda logits: logits.numpy())
        slot = 2 if which == "member" else 1
        return all_logits(((batch[0], batch[slot]) for batch in self.logit_batches(images)), len(images))

    def _require(self, which):
        if which == "member" and self.members is None:
            raise EnsembleError(f"strategy {self.strategy!r} runs no members, so it has no member logits; "
                                "build the Predictor with a member-level strategy or None")
        if which == "class" and self.strategy is None:
            raise EnsembleError("a Predictor of the members alone (strategy None) has no class logits; "
                                "build it with a fusion strategy or 'baseline'")

    def predict_member_logits(self, images):
        """The five members' logits (N, 5, H, W) float32 numpy array (strategies that run the members)."""
        return self._collect(images, "member")

    def predict_source_logits(self, images):
        """The concatenated logits of the strategy's sources (N, 5 per source, H, W) float32: the fuser's input."""
        return all_logits(self._input_batches(images), len(images))

    def predict_logits(self, images):
        """Class logits (N, 5, H, W) float32 numpy array."""
        return self._collect(images, "class")

    def predict_proba(self, images):
        """Class probabilities (N, 5, H, W) float32, summing to 1 over axis 1 (class 0 is 0 under ``competition``)."""
        self._require("class")
        with torch.inference_mode():
            if not self._batched(images):
                return self._per_image(images, "class", lambda logits: torch.softmax(logits, dim=1).numpy())
            return torch.softmax(torch.from_numpy(self.predict_logits(images)), dim=1).numpy()

    def predict(self, images):
        """Masks (N, H, W) uint8 of class ids: the argmax of the class logits (one (H, W) mask for one image)."""
        self._require("class")
        if not self._batched(images):
            return self._per_image(images, "class", lambda logits: channel_argmax(logits).to(torch.uint8).numpy())
        masks = np.empty((len(images), *np.shape(images)[1:]), dtype=np.uint8)
        for start, class_logits, _ in self.logit_batches(images):
            masks[start : start + len(class_logits)] = channel_argmax(class_logits).to(torch.uint8).numpy()
        return masks

    def export(self, path, format="pt2"):
        """Write the networks + fuser + softmax as one program (see :mod:`ensemble.export`).

        ``format="pt2"``: a ``torch.export`` program of the networks (members stacked) and the fuser;
        ``format="onnx"``: one ONNX graph of the networks and the fuser, or of the baseline. With ``tta="flip"``
        the program averages the networks' logits with those of the mirrored images, as :meth:`predict` does.
        """
        from .export import export_onnx_pipeline, export_pipeline  # exporters load only when exporting

        if self.strategy is None or (format == "pt2" and self.fuser is None):
            raise EnsembleError(f"--strategy: {format} export needs a fusion strategy of {self.folder.path}"
                                f"{' or baseline' if format == 'onnx' else ''}, not {self.strategy!r}")
        example_shape, flip = (2, 1, *self.tile_shape), self.tta == "flip"
        if format == "pt2":
            if self.sources == (MEMBERS,):
                return export_pipeline(StackedUNet.from_members(self.members), self.fuser, path, example_shape, flip)
            networks = MembersOneByOne([StackedUNet.from_members(self.members).for_inference() if s == MEMBERS
                                        else load_source(self.folder, s) for s in self.sources]).eval()
            return export_pipeline(networks, self.fuser, path, example_shape, flip)
        if format == "onnx":
            modules = [members_forward(self.members) if s == MEMBERS else load_source(self.folder, s)
                       for s in self.sources]
            networks = modules[0] if len(modules) == 1 else MembersOneByOne(modules).eval()
            return export_onnx_pipeline(networks, self.fuser, path, example_shape, flip)
        raise EnsembleError(f"--format: unknown {format!r}; valid: pt2, onnx")

    def __repr__(self):
        return (f"Predictor(run={str(self.folder.path)!r}, strategy={self.strategy!r}, device={self.device!r}, "
                f"engine={self.engine!r}, tta={self.tta!r}, objective={self.objective!r})")


def _network_hashes(folder, names):
    return {name: sha256_file(_network_checkpoint(folder, name)) for name in names}


def cached_val_logits(run, data, tile_ids, device="cpu", log=None, stack=None, engine="auto", source=MEMBERS):
    """Logits (N, 5, H, W) of one source (default the members) on the run's validation tiles, and their ids,
    computed once and cached.

    The cache is reused only while it was made from the same checkpoints (sha256), the same
    validation tiles and the same engine (:mod:`ensemble.engines`; the engines agree within 1e-5).
    ``stack`` (:func:`resolve_stack`) says whether the members run stacked or one by one (equal
    within 1e-5). Returns ``(logits, ids, val_idx)``.
    """
    engine = resolve_engine(engine, device)
    folder = RunFolder(run)
    manifest = check_run_data(folder, data)
    val_idx = np.asarray(manifest["split"]["val_indices"], dtype=np.int64)
    ids = np.asarray(tile_ids)[val_idx]
    meta_path = folder.cache_path("meta", source)
    hashes = _network_hashes(folder, source_networks(folder, source))
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
    predictor = Predictor(folder.path, None if source == MEMBERS else source, device, stack=stack, engine=engine,
                          log=log)
    images = data.images[val_idx]
    logits = predictor.predict_member_logits(images) if source == MEMBERS else predictor.predict_logits(images)
    for which, array in (("logits", logits), ("ids", ids)):
        with atomic_path(folder.cache_path(which, source)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
    write_json_atomic(meta_path, {key: hashes, "tiles": int(len(val_idx)), "engine": engine})
    return logits, ids, val_idx
