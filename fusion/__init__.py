"""Fusion of a run's logit maps -- the five one-vs-rest members, and the multiclass nets -- into one 5-class mask.

Strategies (registry :data:`FUSERS`, names in :data:`STRATEGIES`); each fuser's ``sources`` names
the networks whose logits it reads. Over the members:

* ``argmax``: the member logits unchanged (naive reference);
* ``bias``: the member logits plus one offset per class, tuned for the headline mean IoU;
* ``calibrated``: per-member temperature and bias, fitted by NLL with L-BFGS;
* ``learned`` / ``learned3x3``: a 1x1 / 3x3 convolution over the member logits, trained with
  class-weighted cross-entropy and early stopping on held-out calibration tiles.

Over several networks (:mod:`fusion.combined`):

* ``baseline_bias``: the multiclass baseline plus the ``bias`` offsets;
* ``hybrid``: the members' learned fusion and the baseline soft-voted, then the offsets;
* ``stacked``: a 1x1 convolution over member and baseline logits (10 inputs), then the offsets;
* ``baseline_pair`` / ``baseline_pair_bias``: the baseline and its replica ``baseline_1`` soft-voted,
  without / with the offsets;
* ``student_bias``: the distilled student (``ensemble distill``) plus the ``bias`` offsets;
* ``vote``: the members' softmax and the baseline's averaged, nothing fitted (an honest teacher).
"""
from pathlib import Path

import torch

from ensemble.core.errors import RunError
from ensemble.core.fileio import pickle_refusal

from .argmax import ArgmaxFuser
from .base import FORMAT, FORMAT_VERSION, Fuser, NotFittedError
from .bias import BiasFuser
from .calibrated import CalibratedFuser
from .combined import (
    BaselineBiasFuser,
    BaselinePairBiasFuser,
    BaselinePairFuser,
    HybridFuser,
    StackedFuser,
    StudentBiasFuser,
    VoteFuser,
)
from .learned import Learned3x3Fuser, LearnedFuser

FUSERS = {
    "argmax": ArgmaxFuser,
    "bias": BiasFuser,
    "calibrated": CalibratedFuser,
    "learned": LearnedFuser,
    "learned3x3": Learned3x3Fuser,
    "baseline_bias": BaselineBiasFuser,
    "hybrid": HybridFuser,
    "stacked": StackedFuser,
    "baseline_pair": BaselinePairFuser,
    "baseline_pair_bias": BaselinePairBiasFuser,
    "student_bias": StudentBiasFuser,
    "vote": VoteFuser,
}
STRATEGIES = tuple(FUSERS)
_KEYS = ("format", "format_version", "strategy", "params", "init", "fitted_tile_ids", "fit_info")

__all__ = [
    "FUSERS", "STRATEGIES", "Fuser", "NotFittedError", "ArgmaxFuser", "BiasFuser", "CalibratedFuser", "LearnedFuser",
    "Learned3x3Fuser", "BaselineBiasFuser", "HybridFuser", "StackedFuser", "BaselinePairFuser",
    "BaselinePairBiasFuser", "StudentBiasFuser", "VoteFuser", "get_fuser", "load_fuser", "new_fuser",
]


def new_fuser(name, objective, seed=0, **kwargs):
    """An unfitted fuser of strategy ``name`` for ``objective``, ``seed`` for the strategies that draw numbers."""
    if name not in FUSERS:
        raise ValueError(f"unknown fusion strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if name != "argmax":
        kwargs["seed"] = seed
    return FUSERS[name](objective=objective, **kwargs)


def get_fuser(name, **kwargs):
    """A new, unfitted fuser of strategy ``name`` built with ``kwargs``; ``ValueError`` for an unknown name."""
    if name not in FUSERS:
        raise ValueError(f"unknown fusion strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return FUSERS[name](**kwargs)


def load_fuser(path):
    """Load a fuser written by :meth:`Fuser.save`; ``RunError`` naming the file if it is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"fuser file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        refused = pickle_refusal(exc)
        if refused:
            raise RunError(f"fuser file {path} holds a pickled Python object ({refused}), which is never loaded; "
                           "fuser files hold only tensors and plain values") from None
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"fuser file {path} is corrupted or not a torch file "
                       f"({type(exc).__name__}: {reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunError(f"fuser file {path} is not a {FORMAT} file")
    version = payload.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise RunError(f"fuser file {path} has format version {version!r}; this tool reads 1 to {FORMAT_VERSION}")
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise RunError(f"fuser file {path} lacks {', '.join(missing)}")
    strategy = payload["strategy"]
    if strategy not in FUSERS:
        raise RunError(f"fuser file {path} has unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    init = dict(payload["init"])
    if version == 1:  # written before objectives existed: fitted on every pixel, full 5-class masks
        init["objective"] = "fullmask"
    try:
        return FUSERS[strategy](**init)._restore(payload)
    except (TypeError, ValueError) as exc:
        raise RunError(f"fuser file {path} has bad {strategy} settings or parameters: {exc}") from None
