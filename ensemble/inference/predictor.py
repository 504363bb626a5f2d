"""The one way down from a run folder to logits: :class:`Predictor`.

A :class:`Predictor` loads and verifies a run's networks once (:mod:`ensemble.inference.loading`): the
members, checked to agree with each other and with the run's manifest (classes, tile size, data hash),
the baseline and its replicas, the control, and a fitted fuser. What a strategy runs is a list of
*sources*, each a module from images to five logit maps; a fuser reads their concatenation. How they
run (device, engine, TTA, batch size, layout, windows) is one
:class:`~ensemble.inference.options.InferenceOptions`. ``ensemble predict``, ``evaluate`` (the budget
curve's snapshots included), ``fuse``, ``export``, the validation-logits cache and the notebook API all
run their networks through it.
"""
from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from fusion.base import channel_argmax
from members.stacked import StackedUNet

from ..core.classes import BASELINE, CONTROL, NUM_CLASSES, STUDENT, is_baseline_replica
from ..core.errors import EnsembleError
from ..core.fileio import sha256_file
from ..core.imagestats import image_statistics, warn_inputs
from ..core.runfolder import RunFolder
from .batching import Tiles, all_logits, as_tiles, image_list, logits_batches, tta_logits
from .engines import OnnxForward, cached_graph, export_onnx, resolve_engine
from .loading import (
    MEMBERS,
    MembersOneByOne,
    check_tile_shape,
    concatenated,
    load_members,
    load_run_fuser,
    load_source,
    members_forward,
    network_checkpoint,
    source_networks,
)
from .options import InferenceOptions, resolve_stack
from .strategies import check_strategy
from .windows import as_image_tensor, resize_logits, stitched_logits, to_training_scale

if TYPE_CHECKING:
    from ..core.imagestats import InputCheck

#: What the predictor takes: one (H, W) image, an (N, H, W) array, or a list of images of any sizes.
Images = Union["np.ndarray", "list[np.ndarray]"]


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
    run's tiles. Those go one at a time through :mod:`ensemble.inference.windows`: brought to the training
    scale (``scale``: input pixels per training pixel), covered by Gaussian-weighted windows
    ``step`` tiles apart whose source logits are stitched, fused, brought back to the input size.
    Results come back in the input's form: one array for one image, a list for a list.

    How the networks run is one :class:`~ensemble.inference.options.InferenceOptions`: ``options=``, or its
    fields as keywords (``device``, ``engine``, ``tta``, ``batch_size``, ``stack``, ``scale``, ``step``).
    ``epoch`` loads every network as it stood after that epoch of its training (its snapshot; ``best.pt``
    for one that stopped earlier): what the budget curve scores.

    **Input check.** :meth:`check` compares each image, brought to the training scale, with the range of
    simple statistics the run's training tiles span (``RUN/input_stats.json``,
    :mod:`ensemble.core.imagestats`: noise, sharpness, finest-octave detail, JPEG's quantized DCT, grey-level
    percentiles, size), and returns one :class:`~ensemble.core.imagestats.InputCheck` per image. With
    ``check_inputs=True`` (what ``api.predictor()`` builds) ``predict``, ``predict_proba`` and ``predict_logits``
    run it on their images too, keep the records of the last call in ``input_checks_`` and, when an image is
    out of range, issue one :class:`~ensemble.core.imagestats.InputWarning`. The check never changes a
    prediction. ``input_range`` is ``None`` for a run without the file: then nothing is checked.

    ``predict`` / ``predict_proba`` / ``predict_logits`` / ``predict_member_logits`` /
    ``predict_source_logits`` serve ``ensemble predict``, ``evaluate``, the fusers' logits cache
    and the notebook API; ``export`` writes the program of ``ensemble export``.
    """

    def __init__(self, run, strategy="learned", *, options=None, epoch=None, log=None, check_inputs=False,
                 **settings):
        self.options = InferenceOptions.of(options, **settings)
        self.epoch = epoch
        self.check_inputs = bool(check_inputs)
        self.input_checks_ = None  # the InputCheck records of the last predict* call (with check_inputs)
        self._input_range = False
        self.windows_run = 0  # windows (tiles) through the networks so far: the progress counter
        self.folder = RunFolder(run)
        manifest = self.folder.manifest()
        if strategy is not None:
            check_strategy(self.folder, strategy)
        device = self.options.device
        self.engine = resolve_engine(self.options.engine, device)
        self.stack = resolve_stack(self.options.stack, device)
        self.strategy, self.device, self.tta = strategy, device, self.options.tta
        self.batch_size, self.scale, self.step = self.options.batch_size, self.options.scale, self.options.step
        self.objective = self.folder.objective()
        self.tile_shape = tuple(manifest["data"]["tile_shape"])
        self.fuser, self.members = None, None
        if strategy in (BASELINE, CONTROL, STUDENT) or (strategy is not None and is_baseline_replica(strategy)):
            self.sources = (strategy,)
        elif strategy is None:
            self.sources = (MEMBERS,)
        else:
            self.fuser = load_run_fuser(self.folder.path, strategy)
            self.sources = tuple(self.fuser.sources)
        if MEMBERS in self.sources:
            self.members = load_members(self.folder.path, device, epoch)
        forwards = [self._source_forward(source, log) for source in self.sources]
        self._forward = concatenated(forwards)
        if check_inputs:  # a broken or changed file is refused when the predictor is built, not mid-way
            self._input_range = self.folder.input_range()

    @property
    def input_range(self):
        """The run's :class:`~ensemble.core.imagestats.InputRange` (``input_stats.json``, verified), or ``None`` for a
        run without it; read once, when the predictor is built with ``check_inputs`` or at the first check."""
        if self._input_range is False:
            self._input_range = self.folder.input_range()
        return self._input_range

    def unchecked_note(self):
        """The line that says a run without ``input_stats.json`` leaves its inputs unchecked (``None`` with the
        file)."""
        if self.input_range is not None:
            return None
        return (f"{self.folder.input_stats_path.name}: not in {self.folder.path}, so the inputs are not checked "
                "against the training tiles (python scripts/input_stats.py writes it)")

    def check(self, images: Images) -> list[InputCheck]:
        """One :class:`~ensemble.core.imagestats.InputCheck` per image: its statistics at the training scale and
        what lies outside the run's training tiles' range (``findings``; empty when none). ``images`` as for
        :meth:`predict`: a batch of the run's tiles at scale 1 is checked as it is, any other image after
        :func:`~ensemble.inference.windows.to_training_scale` at ``scale``. A run without ``input_stats.json``
        has nothing to check against: :class:`EnsembleError`.
        """
        if self.input_range is None:
            raise EnsembleError(f"{self.folder.input_stats_path}: not found, so the inputs cannot be checked; "
                                "training writes it (python scripts/input_stats.py --run RUN writes it for a "
                                "trained run)")
        if self._batched(images):
            tiles = images if isinstance(images, Tiles) else as_tiles(images)
            stats = image_statistics(tiles.raw, self.tile_shape)  # uint8 0-255 or float 0-1
        else:
            _, sequence = image_list(images)
            parts = [image_statistics(self._training_scale(image), self.tile_shape) for image in sequence]
            stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else \
                image_statistics(np.zeros((0, 1, 1)))
        return self.input_range.check(stats, self.scale)

    def _training_scale(self, image):
        """A float 0-1 image (H, W) as the networks see it: at the training scale (numpy)."""
        with torch.inference_mode():
            return to_training_scale(as_image_tensor(image), self.scale).numpy()

    def _checked(self, images):
        """With ``check_inputs`` and a run that has the statistics: check ``images``, keep the records in
        ``input_checks_`` and warn when one is out of range."""
        if not self.check_inputs or self.input_range is None:
            return
        self.input_checks_ = self.check(images)
        warn_inputs(self.input_checks_)

    def _make_source(self, source):
        """A fresh PyTorch module of ``source`` (the members from the loaded ones)."""
        if source == MEMBERS:
            return members_forward(self.members, self.stack)
        return load_source(self.folder, source, self.device, epoch=self.epoch)

    def _source_forward(self, source, log):
        """The forward of one source: an onnxruntime session of its cached graph, or the PyTorch module.

        The PyTorch module is built only where it runs or is exported, not when a cached graph serves.
        """
        if self.engine != "onnxruntime":
            return self._make_source(source)
        graph = source
        if source == MEMBERS:
            graph = "members" if self.stack else "members_one_by_one"
        if self.epoch is not None:
            graph = f"{graph}@epoch_{self.epoch:03d}"
        return self._onnx_forward(graph, source_networks(self.folder, source), lambda: self._make_source(source), log)

    def _onnx_forward(self, graph, names, make, log):
        """The module ``make()`` as an onnxruntime session; exported (built) once and cached in the run."""
        checksums = self.folder.manifest().get("checksums", {})
        sources = {}
        for name in names:
            path = network_checkpoint(self.folder, name, self.epoch)
            key = self.folder.relative(path)
            sources[key] = checksums.get(key) or sha256_file(path)
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
        return tta_logits(self._forward, windows.to(self.device), self.tta)

    def stitched_source_logits(self, image):
        """The sources' logits (1, 5 per source, h, w) over one float 0-1 image (H, W) at the training scale.

        The image is resampled by ``scale`` and covered by sliding windows (:mod:`ensemble.inference.windows`);
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
        (:func:`~ensemble.inference.windows.resized_bands`).
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
        single, sequence = image_list(images)
        out = []
        for raw in sequence:
            class_logits, member_logits = self.image_logits(raw)
            out.append(convert(class_logits if which == "class" else member_logits)[0])
        if single:
            return out[0]
        return out if not isinstance(images, np.ndarray) else np.stack(out)

    def _batched(self, images):
        """True for an (N, H, W) array of the run's tiles at scale 1: the batched path of :meth:`logit_batches`."""
        return isinstance(images, (np.ndarray, Tiles)) and len(np.shape(images)) == 3 and \
            self.fits_tiles(np.shape(images)[1:])

    def _input_batches(self, tiles):
        tiles = tiles if isinstance(tiles, Tiles) else as_tiles(tiles)
        check_tile_shape(self.folder, tiles.shape[1:])
        yield from logits_batches(self._forward, tiles, self.batch_size, self.device, self.tta)

    def _collect(self, images, which):
        self._require(which)
        if which == "class":
            self._checked(images)
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

    def predict_logits(self, images: Images) -> Any:
        """Class logits (N, 5, H, W) float32 numpy array."""
        return self._collect(images, "class")

    def predict_proba(self, images: Images) -> Any:
        """Class probabilities (N, 5, H, W) float32, summing to 1 over axis 1 (class 0 is 0 under ``competition``)."""
        self._require("class")
        with torch.inference_mode():
            if not self._batched(images):
                self._checked(images)
                return self._per_image(images, "class", lambda logits: torch.softmax(logits, dim=1).numpy())
            return torch.softmax(torch.from_numpy(self.predict_logits(images)), dim=1).numpy()

    def predict(self, images: Images) -> Any:
        """Masks (N, H, W) uint8 of class ids: the argmax of the class logits (one (H, W) mask for one image)."""
        self._require("class")
        self._checked(images)
        if not self._batched(images):
            return self._per_image(images, "class", lambda logits: channel_argmax(logits).to(torch.uint8).numpy())
        masks = np.empty((len(images), *np.shape(images)[1:]), dtype=np.uint8)
        for start, class_logits, _ in self.logit_batches(images):
            masks[start : start + len(class_logits)] = channel_argmax(class_logits).to(torch.uint8).numpy()
        return masks

    def export(self, path: str | PathLike[str], format: str = "pt2") -> None:
        """Write the networks + fuser + softmax as one program (see :mod:`ensemble.inference.export`).

        ``format="pt2"``: a ``torch.export`` program of the networks (members stacked) and the fuser;
        ``format="onnx"``: one ONNX graph of the networks and the fuser. A strategy without a fuser (the baseline,
        the student) is its one network and a softmax in either format. With ``tta="flip"``
        the program averages the networks' logits with those of the mirrored images, as :meth:`predict` does.
        """
        from .export import export_onnx_pipeline, export_pipeline  # exporters load only when exporting

        if self.strategy is None:
            raise EnsembleError(f"--strategy: {format} export needs a served strategy of {self.folder.path}")
        example_shape, flip = (2, 1, *self.tile_shape), self.tta == "flip"
        if format == "pt2":
            if self.fuser is None:  # one plain network (the baseline, the student, the control's mean)
                network = load_source(self.folder, self.sources[0], epoch=self.epoch).eval()
                return export_pipeline(network, None, path, example_shape, flip)
            if self.sources == (MEMBERS,):
                return export_pipeline(StackedUNet.from_members(self.members), self.fuser, path, example_shape, flip)
            networks = MembersOneByOne([StackedUNet.from_members(self.members).for_inference() if s == MEMBERS
                                        else load_source(self.folder, s, epoch=self.epoch)
                                        for s in self.sources]).eval()
            return export_pipeline(networks, self.fuser, path, example_shape, flip)
        if format == "onnx":
            modules = [members_forward(self.members) if s == MEMBERS else load_source(self.folder, s, epoch=self.epoch)
                       for s in self.sources]
            networks = modules[0] if len(modules) == 1 else MembersOneByOne(modules).eval()
            return export_onnx_pipeline(networks, self.fuser, path, example_shape, flip)
        raise EnsembleError(f"--format: unknown {format!r}; valid: pt2, onnx")

    def __repr__(self):
        return (f"Predictor(run={str(self.folder.path)!r}, strategy={self.strategy!r}, device={self.device!r}, "
                f"engine={self.engine!r}, tta={self.tta!r}, objective={self.objective!r})")
