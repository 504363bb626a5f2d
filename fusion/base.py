"""The :class:`Fuser` base: fit on the logits of a run's networks and masks, predict fused class logits.

A fuser reads the logits of its :attr:`Fuser.sources`, concatenated along the channels in that
order, five channels each: ``"members"`` is the stacked member logits (channel k is the logit of
the one-vs-rest member for class k, in the order of :data:`ensemble.core.classes.CLASS_NAMES`),
``"baseline"`` (and its replicas ``"baseline_1"``, ...) a multiclass net's class logits (class 0 at
-inf under the ``competition`` objective). It turns them into fused 5-class logits (N, 5, H, W). The API follows
scikit-learn's ``CalibratedClassifierCV``: ``fit`` returns ``self``, fitted attributes end in ``_`` and
predicting before ``fit`` raises :class:`NotFittedError`.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ensemble.core.classes import NUM_CLASSES
from ensemble.core.fileio import write_bytes_atomic
from ensemble.core.objectives import DEFAULT_OBJECTIVE, check_objective, for_objective, predicts_background

FORMAT = "mars-fuser"
#: 2: the fuser's ``objective`` is one of its constructor arguments (1: no objective, always ``fullmask``).
FORMAT_VERSION = 2


#: Logits a fuser reads: a tensor or array (N, C, H, W), or for fusers over several sources a dict of them by
#: source (checked when read, :func:`as_member_logits`); typed loosely because torch is read as untyped.
Logits = Any
#: True masks (N, H, W) of class ids: an integer array or tensor.
Masks = Any


class NotFittedError(RuntimeError):
    """Raised when a fuser is used before :meth:`Fuser.fit`."""


def _as_tensor(array):
    """``torch.as_tensor`` without copying, also for read-only numpy arrays (only ever read here)."""
    if isinstance(array, torch.Tensor):
        return array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(np.asarray(array))


def as_member_logits(member_logits, channels=NUM_CLASSES):
    """Return input logits as a float32 tensor (N, ``channels``, H, W), sharing memory where possible."""
    member_logits = _as_tensor(member_logits)
    if member_logits.ndim != 4 or member_logits.shape[1] != channels:
        what = "member logits" if channels == NUM_CLASSES else "input logits"
        raise ValueError(f"{what} must have shape (N, {channels}, H, W), got {tuple(member_logits.shape)}")
    if not member_logits.is_floating_point():
        raise ValueError(f"input logits must be floating point, got {member_logits.dtype}")
    return member_logits.float()


def as_masks(masks, shape):
    """Return ``masks`` as an integer tensor of ``shape`` (N, H, W) after checking ids are 0-4."""
    masks = _as_tensor(masks)
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"masks must have shape {tuple(shape)} to match the member logits, got {tuple(masks.shape)}")
    if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
        raise ValueError(f"masks must be integer class ids 0-{NUM_CLASSES - 1}, got dtype {masks.dtype}")
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= NUM_CLASSES):
        raise ValueError(f"masks hold values outside 0-{NUM_CLASSES - 1}")
    return masks


def channel_argmax(logits):
    """``logits.argmax(dim=1)`` (first maximum wins) for (N, C, H, W), by C elementwise passes.

    ``torch.argmax`` over the channel dim of a contiguous NCHW tensor is several times
    slower on CPU than this loop over the few channels.
    """
    best = logits[:, 0]
    index = torch.zeros(best.shape, dtype=torch.int64, device=logits.device)
    for k in range(1, logits.shape[1]):
        index.masked_fill_(logits[:, k] > best, k)
        best = torch.maximum(best, logits[:, k])
    return index


class Fuser:
    """Base class of the fusion strategies.

    Every strategy takes ``objective`` (:mod:`ensemble.core.objectives`): under ``competition``
    it is fitted on labeled pixels only and never outputs class 0 (the fused class-0 logit is
    -inf; the background member's logit stays an input); under ``fullmask`` it is fitted on
    every pixel and outputs all five classes.

    Subclasses set ``name`` and implement ``get_params``, ``_fit``, ``_params``,
    ``_set_params``, ``_build_module`` and ``_describe_params``; their constructors call
    ``super().__init__(objective)`` and ``get_params`` includes ``objective``.
    """

    name = None
    #: The networks whose logits the fuser reads, five channels each, concatenated in this order.
    sources = ("members",)

    def __init__(self, objective=DEFAULT_OBJECTIVE):
        self.objective = check_objective(objective)

    def _keep(self, **params):
        """Store constructor parameters as attributes of the same names, as scikit-learn estimators do."""
        for name, value in params.items():
            setattr(self, name, value)

    @property
    def input_channels(self):
        """Channels of the input logits: five per source."""
        return NUM_CLASSES * len(self.sources)

    @property
    def labeled_only(self):
        """True when fitting and scoring use labeled pixels only (the ``competition`` objective)."""
        return not predicts_background(self.objective)

    def get_params(self) -> dict[str, Any]:
        """Constructor keyword arguments (plain types) that rebuild an unfitted copy."""
        raise NotImplementedError

    def _fit(self, member_logits, masks):
        """Fit the fuser's parameters on checked inputs; return what ``fit_info_`` records. Each fuser defines it."""
        raise NotImplementedError(f"{type(self).__name__} defines no _fit")

    def fit(self, member_logits: Logits, masks: Masks, tile_ids: Sequence[str] | None = None) -> Fuser:
        """Fit on input logits (N, 5 per source, H, W) and masks (N, H, W); ``tile_ids`` are recorded.

        ``tile_ids`` (one string per tile) end up in ``fitted_tile_ids_`` so a saved fuser
        proves which tiles it was fitted on (an empty list when not given).
        """
        member_logits = as_member_logits(member_logits, self.input_channels)
        masks = as_masks(masks, (member_logits.shape[0],) + tuple(member_logits.shape[2:]))
        if len(member_logits) == 0:
            raise ValueError("cannot fit a fuser on zero tiles")
        tile_ids = [] if tile_ids is None else [str(t) for t in tile_ids]
        if tile_ids and len(tile_ids) != len(member_logits):
            raise ValueError(f"got {len(tile_ids)} tile ids for {len(member_logits)} tiles")
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():  # fit even when called under no_grad
            info = self._fit(member_logits, masks)
        self.fit_info_ = {
            "n_tiles": int(member_logits.shape[0]),
            "n_pixels": int(masks.numel()),
            "fit_seconds": round(time.perf_counter() - start, 3),
            **info,
        }
        self.fitted_tile_ids_ = tile_ids
        return self

    def is_fitted(self) -> bool:
        """True once :meth:`fit` (or :func:`fusion.load_fuser`) has set the fitted attributes."""
        return hasattr(self, "fitted_tile_ids_")

    def _check_fitted(self):
        if not self.is_fitted():
            raise NotFittedError(f"this {type(self).__name__} ({self.name!r}) is not fitted; call fit() first")

    def module(self):
        """A fresh ``torch.nn.Module`` mapping input logits (N, 5 per source, H, W) to fused class logits.

        The fitted parameters are baked in as buffers and the forward pass uses only
        elementwise ops, ``conv2d`` and (``competition``) a ``cat`` that sets the class-0 logit
        to -inf, so it can be exported with ``torch.export``.
        """
        self._check_fitted()
        return for_objective(self._build_module().eval(), self.objective)

    def predict_logits(self, member_logits: Logits) -> torch.Tensor:
        """Fused class logits (N, 5, H, W) float32, before the softmax."""
        self._check_fitted()
        with torch.inference_mode():
            member_logits = as_member_logits(member_logits, self.input_channels)
            return self.module().to(member_logits.device)(member_logits)

    def predict_proba(self, member_logits: Logits) -> torch.Tensor:
        """Fused class probabilities (N, 5, H, W) float32, summing to 1 over dim 1."""
        fused_logits = self.predict_logits(member_logits)
        with torch.inference_mode():
            return torch.softmax(fused_logits, dim=1)

    def predict(self, member_logits: Logits) -> torch.Tensor:
        """Fused masks (N, H, W) int64: the argmax of the fused logits (same as of ``predict_proba``)."""
        fused_logits = self.predict_logits(member_logits)
        with torch.inference_mode():
            return channel_argmax(fused_logits)

    def describe(self):
        """Human-readable lines describing the fitted parameters (for the CLI)."""
        self._check_fitted()
        info = self.fit_info_
        head = f"{self.name}: fitted on {info['n_tiles']} tiles ({info['n_pixels']} pixels) in {info['fit_seconds']} s"
        return [head] + self._describe_params()

    def digest(self):
        """A sha256 (hex) of what the fitted fuser computes: its strategy, constructor parameters, fitted parameters
        and fitted tiles. ``fit_info_`` is left out: it holds the fit's duration, so two fits of the same fuser on
        the same logits give the same digest but not the same file bytes."""
        self._check_fitted()
        header = {"strategy": self.name, "init": self.get_params(), "fitted_tile_ids": list(self.fitted_tile_ids_)}
        sha = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
        for key, value in sorted(self._params().items()):
            value = value.detach().cpu().contiguous()
            sha.update(f"\n{key} {value.dtype} {tuple(value.shape)}\n".encode())
            sha.update(value.numpy().tobytes())
        return sha.hexdigest()

    def save(self, path):
        """Write the fitted fuser to ``path`` as a torch file, atomically (temp file + ``os.replace``)."""
        self._check_fitted()
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "strategy": self.name,
            "params": {key: value.detach().cpu().clone() for key, value in self._params().items()},
            "init": self.get_params(),
            "fitted_tile_ids": list(self.fitted_tile_ids_),
            "fit_info": dict(self.fit_info_),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(path, buffer.getvalue())
        return path

    def _restore(self, payload):
        """Set the fitted state from a loaded file's ``payload`` (see :func:`fusion.load_fuser`)."""
        self._set_params(payload["params"])
        self.fitted_tile_ids_ = [str(t) for t in payload["fitted_tile_ids"]]
        self.fit_info_ = dict(payload["fit_info"])
        return self

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_param(params, key, shape):
    """Return ``params[key]`` as float32 after checking its shape; ``ValueError`` otherwise."""
    if key not in params:
        raise ValueError(f"missing parameter {key!r}")
    value = params[key]
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"parameter {key!r} should be a tensor of shape {tuple(shape)}, got {got}")
    return value.float()
