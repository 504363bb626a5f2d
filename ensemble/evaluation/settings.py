"""What ``ensemble evaluate`` computes and where it writes: one :class:`EvaluateSettings`, built once by the CLI or
the API and handed down (how the networks run is the separate
:class:`~ensemble.inference.options.InferenceOptions`)."""
from dataclasses import dataclass, replace
from os import PathLike

from ..core.defaults import CROSS_FIT_FOLDS
from ..core.errors import EnsembleError


@dataclass(frozen=True)
class EvaluateSettings:
    """``out`` the report folder (default ``RUN/evaluation``, for a shipped run ``runs/evaluations/<name>``);
    ``cross_fit`` folds of validation rover stops (0: the saved fusers, in-sample); ``n_boot`` bootstrap
    replicates and ``seed``; and what the report adds: ``curve`` (or ``curve_from``, an earlier
    ``budget_curve.json``), ``ablation``, ``tta_gain``, ``frames``, ``robustness`` (limited to ``corruptions``,
    names, when given)."""

    out: str | PathLike | None = None
    cross_fit: int = CROSS_FIT_FOLDS
    n_boot: int = 1000
    seed: int = 0
    curve: bool = False
    curve_from: str | PathLike | None = None
    ablation: bool = False
    tta_gain: bool = False
    frames: bool = False
    robustness: bool = False
    corruptions: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.cross_fit == 1:
            raise EnsembleError("--cross-fit 1: cross-fitting needs at least 2 folds (0 scores the saved fusers "
                                "in-sample)")
        if self.corruptions is not None:
            object.__setattr__(self, "corruptions", tuple(self.corruptions))

    def replace(self, **changes):
        """A copy with ``changes`` (checked like a new one)."""
        return replace(self, **changes)
