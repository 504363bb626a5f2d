"""How a run's networks execute: one :class:`InferenceOptions`, built once by the CLI or the API and handed down.

Every verb that runs networks (predict, evaluate, fuse, export, the budget curve, the logits cache)
takes the same object, so an execution option is added in one place.
"""
from dataclasses import asdict, dataclass, fields, replace
from os import PathLike

from ..core.defaults import BATCH_SIZE, DEFAULT_STEP, MAX_PIXELS
from ..core.errors import EnsembleError
from .windows import check_scale, check_step

#: Test-time augmentations: none, or the horizontal flip (logits of the image and its mirror averaged).
TTA_CHOICES = ("none", "flip")


def check_tta(tta):
    """Refuse an unknown test-time augmentation with :class:`EnsembleError` naming ``--tta``."""
    if tta not in TTA_CHOICES:
        raise EnsembleError(f"--tta: unknown {tta!r}; valid: {', '.join(TTA_CHOICES)}")


def resolve_stack(stack, device):
    """``stack`` as given, or for ``None`` the layout measured faster on ``device``: the members stacked into one
    grouped network on a GPU, one by one on the CPU (docs/performance.md, "Stacked or one by one")."""
    if stack is not None:
        return bool(stack)
    return str(device).startswith("cuda")


@dataclass(frozen=True)
class InferenceOptions:
    """How the networks run; every field has the CLI option of the same name (``--batch-size``, ...).

    ``device``: ``cpu`` or ``cuda`` (resolved from ``auto`` by the caller); ``engine``: ``auto``, ``torch`` or
    ``onnxruntime`` (:mod:`ensemble.inference.engines`); ``tta``: one of :data:`TTA_CHOICES`; ``batch_size``:
    tiles per forward; ``stack``: the members stacked (``True``), one by one (``False``) or the faster layout
    for the device (``None``, :func:`resolve_stack`); ``scale`` and ``step``: input pixels per training pixel
    and the sliding windows' step in tiles, for images other than the run's tiles
    (:mod:`ensemble.inference.windows`). Checked when built: a bad value is an :class:`EnsembleError` naming
    its option.
    """

    device: str = "cpu"
    engine: str = "auto"
    tta: str = "none"
    batch_size: int = BATCH_SIZE
    stack: bool | None = None
    scale: float = 1.0
    step: float = DEFAULT_STEP

    def __post_init__(self):
        check_tta(self.tta)
        try:
            batch_size = int(self.batch_size)
        except (TypeError, ValueError):
            batch_size = 0
        if batch_size < 1:
            raise EnsembleError(f"--batch-size: must be a whole number of at least 1, got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", batch_size)
        object.__setattr__(self, "scale", check_scale(self.scale))
        object.__setattr__(self, "step", check_step(self.step))

    @classmethod
    def of(cls, options=None, **settings):
        """``options`` (default: every default) with the named ``settings`` replaced; an unknown name is a
        ``TypeError`` naming it, like any keyword argument."""
        base = options if options is not None else cls()
        if not isinstance(base, cls):
            raise TypeError(f"options: expected InferenceOptions, got {type(base).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unexpected inference option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return replace(base, **settings) if settings else base

    def replace(self, **changes):
        """A copy with ``changes`` (checked like a new one)."""
        return replace(self, **changes)

    def to_dict(self):
        """The fields as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class PredictSettings:
    """What ``predict`` writes and which images it takes; built once by the CLI or the API and handed down.

    Outputs, each ``None`` when not asked for: ``out`` the Kaggle CSV, ``masks_dir`` class-id PNGs, ``png_dir``
    coloured masks, ``overlay_dir`` overlays, ``uncertainty_dir`` entropy and disagreement maps, ``summary`` every
    image's class shares (``.csv`` or ``.json``). Inputs: images over ``max_pixels`` are refused before any work;
    with ``check_inputs`` each image is checked against the run's training statistics. ``notes``: lines said once
    the inputs are known to be good (the default strategy and TTA, said only then so that an error stays one line).
    """

    out: str | PathLike | None = None
    masks_dir: str | PathLike | None = None
    png_dir: str | PathLike | None = None
    overlay_dir: str | PathLike | None = None
    uncertainty_dir: str | PathLike | None = None
    summary: str | PathLike | None = None
    max_pixels: int = MAX_PIXELS
    check_inputs: bool = True
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        try:
            max_pixels = int(self.max_pixels)
        except (TypeError, ValueError):
            max_pixels = 0
        if max_pixels < 1:
            raise EnsembleError(f"--max-pixels: must be at least 1, got {self.max_pixels}")
        object.__setattr__(self, "max_pixels", max_pixels)
        object.__setattr__(self, "notes", tuple(self.notes))

    def replace(self, **changes):
        """A copy with ``changes`` (checked like a new one)."""
        return replace(self, **changes)


def split_options(keywords, **classes):
    """``keywords`` shared out among option classes by their field names: ``{name: {field: value}}`` for each
    ``name=OptionsClass`` given; a keyword no class has is a ``TypeError`` naming it, like any unknown argument."""
    out = {name: {} for name in classes}
    owners = {f.name: name for name, cls in classes.items() for f in fields(cls)}
    unknown = sorted(set(keywords) - set(owners))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(owners))}")
    for key, value in keywords.items():
        out[owners[key]][key] = value
    return out
