"""Simple statistics of grey images at the training scale, the range the training tiles span, and the check.

The networks give confident masks on any input, also on images unlike their training tiles (noisy,
JPEG-compressed, blurred, resampled, given at a wrong ``--scale``, badly exposed). A few cheap statistics
of an image, brought to the training scale first, tell most of those apart from the tiles a run was
trained on (:data:`STATISTICS`):

* ``noise``: the noise level in grey levels (0-255), Immerkær's estimate: the mean absolute response of the
  3x3 second-difference kernel [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] / 6 (unit gain for white noise) times
  sqrt(pi / 2). Texture raises it too; high: noise, low: a blurred, JPEG-compressed or enlarged image.
* ``sharpness``: log10 of the mean squared 4-neighbour Laplacian, in grey levels squared.
* ``detail``: log2 of the Laplacian energy over that of the image box-downsampled 2x: how much of the image's
  detail lies in its finest octave. It does not depend on contrast. Low: blurred, or enlarged (an image 2x
  too large for its ``--scale``, whose finest octave is empty); high: noise or sharpening. An image 2x too
  small for its ``--scale`` is not told apart by it (natural terrain looks alike at both scales): ``extent``
  catches a tile or frame given so.
* ``jpeg``: JPEG's trace. JPEG quantizes the 8x8 blocks' discrete cosine transform (DCT) coefficients on a
  grid that starts at the top-left pixel; at any quality most high-frequency coefficients become 0, and
  stay within rounding of it in the decoded image. The statistic is the share of the high-frequency
  coefficients (orthonormal DCT-II, u + v >= 9 of 0-14) under half a grey level on that grid, minus the
  same share on the grid shifted by 4 pixels: about 0 without JPEG (whatever the texture), up to 1 with.
  A resampling by a factor near 1 leaves an 8-pixel pattern that raises it too.
* ``p1``, ``p50``, ``p99``: grey levels below which 1 %, 50 %, 99 % of the pixels lie (exposure).
* ``extent``: the image's size at the training scale as a share of the run's tile, the smaller of height and
  width. A tile given with ``--scale 2`` is half a tile at the training scale: its content is 2x too small.

``STATISTICS`` is fixed: a run records the training tiles' distribution of each statistic
(:func:`training_statistics`, ``RUN/input_stats.json``, :class:`InputRange`) and the thresholds of the check,
computed from that distribution by :data:`RULES`; :meth:`InputRange.check` compares an image's statistics
with them. The rules were calibrated on the robustness benchmark's corrupted validation tiles
(``scripts/calibrate_warnings.py``, docs/results.md, Input warnings). The check never changes a prediction.

Cost: about 0.2 ms per 64x128 tile, one pass of a few vectorised numpy operations over a batch, all on the
calling thread (no BLAS: its threads would contend with the networks' for the cores).
"""
import math
import sys
import warnings
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np

#: Grey levels of an 8-bit image: statistics are in grey levels 0-255.
LEVELS = 255.0
#: The statistics, in the order of the file and the messages.
STATISTICS = ("noise", "sharpness", "detail", "jpeg", "p1", "p50", "p99", "extent")
#: Quantiles of each statistic over the training tiles that the file records.
QUANTILES = (0.001, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999)
#: Version of the ``input_stats.json`` layout; a newer one is not read.
FORMAT = 1
#: JPEG's block size, and the high-frequency DCT coefficients ``jpeg`` counts (u + v at least this) and the
#: magnitude under which one counts as quantized to 0 (grey levels).
BLOCK = 8
HIGH_FREQUENCY = 9
NEAR_ZERO = 0.5
#: Tiles whose statistics are computed at once (memory: a few float32 copies of the chunk).
CHUNK = 64
_EPS = 1e-2  # grey levels squared: keeps the logarithms of a flat image finite


@dataclass(frozen=True)
class Rule:
    """How a statistic's thresholds follow from the training tiles' distribution, and what an outlier means.

    ``low`` / ``high`` is the margin beyond the 1st / 99th percentile, in units of their distance (the spread
    of the middle 98 %): ``low = q01 - low * (q99 - q01)``; ``None`` leaves that side unchecked. A statistic
    with ``fixed`` thresholds ``(low, high)`` ignores the distribution (``extent``: the training tiles are
    all exactly one tile). ``unit`` and the causes are for the messages; a cause may name ``{scale}``,
    ``{double}``, ``{fit}`` (the ``--scale`` that would make the image one tile) and ``{factor}``
    (how many times too small it then is).
    """

    unit: str
    _: KW_ONLY
    low: float = None
    high: float = None
    low_cause: str = ""
    high_cause: str = ""
    fixed: tuple = None
    digits: int = 2


#: The rule of every statistic (calibrated: docs/results.md, Input warnings).
RULES = {
    "noise": Rule("grey levels", low=0.02, high=0.1, low_cause="a smooth image: blurred, JPEG-compressed or enlarged?",
                  high_cause="a noisy image?"),
    "sharpness": Rule("(log10 Laplacian energy)", low=0.1, high=0.05, low_cause="a featureless or blurred image?",
                      high_cause="a noisy or over-contrasted image?"),
    "detail": Rule("(log2 finest-octave ratio)", low=-0.02, high=0.1,
                   low_cause="a blurred image, or an enlarged one: if it was upscaled, try --scale {double}",
                   high_cause="a noisy or sharpened image?"),
    "jpeg": Rule("(share of quantized DCT coefficients)", high=0.3,
                 high_cause="a JPEG-compressed (or resampled) image?"),
    "p1": Rule("grey levels", low=0.02, high=0.2, low_cause="clipped shadows: over-contrasted or underexposed?",
               high_cause="no dark pixels: overexposed or low in contrast?", digits=1),
    "p50": Rule("grey levels", low=0.1, high=0.1, low_cause="a dark image: underexposed?",
                high_cause="a bright image: overexposed?", digits=1),
    "p99": Rule("grey levels", low=0.2, low_cause="no bright pixels: underexposed or low in contrast?", digits=1),
    "extent": Rule("tiles", fixed=(0.75, math.inf),
                   low_cause="looks {factor}x too small for --scale {scale}: try --scale {fit}"),
}


class InputWarning(UserWarning):
    """Images unlike the run's training tiles were predicted: their masks may be confidently wrong."""


def _laplacian_energy(x):
    """Mean squared 4-neighbour Laplacian of each image of ``x`` (N, H, W) (NaN under 3x3 pixels)."""
    if min(x.shape[1:]) < 3:
        return np.full(len(x), np.nan)
    lap = x[:, 1:-1, :-2] + x[:, 1:-1, 2:] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1] - 4 * x[:, 1:-1, 1:-1]
    return np.einsum("nij,nij->n", lap, lap, dtype=np.float64) / lap[0].size


def _noise(x):
    """Immerkær's noise estimate of each image (grey levels; NaN under 3x3 pixels)."""
    if min(x.shape[1:]) < 3:
        return np.full(len(x), np.nan)
    rows = x[:, :, :-2] - 2 * x[:, :, 1:-1] + x[:, :, 2:]
    residual = rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:]
    return np.abs(residual).reshape(len(x), -1).mean(axis=1, dtype=np.float64) * (math.sqrt(math.pi / 2) / 6)


def _dct_matrix(size=BLOCK):
    """The orthonormal DCT-II matrix (size, size): row u is the cosine of frequency u."""
    position = np.arange(size)
    matrix = np.cos(np.pi * (2 * position[None] + 1) * position[:, None] / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.astype(np.float32)


_DCT = _dct_matrix()
#: The 2-D DCT of a flattened 8x8 block, rows of the high-frequency coefficients only: (21, 64), one matrix
#: product for every block of a batch.
_HIGH_DCT = np.kron(_DCT, _DCT)[(np.add.outer(np.arange(BLOCK), np.arange(BLOCK)) >= HIGH_FREQUENCY).ravel()]


def _near_zero_share(x, offset):
    """Per image, the share of high-frequency DCT coefficients under :data:`NEAR_ZERO` on the 8x8 grid that
    starts ``offset`` pixels from the top-left corner."""
    n = len(x)
    x = x[:, offset:, offset:]
    rows, cols = x.shape[1] // BLOCK, x.shape[2] // BLOCK
    blocks = x[:, : rows * BLOCK, : cols * BLOCK].reshape(n, rows, BLOCK, cols, BLOCK).transpose(0, 1, 3, 2, 4)
    # einsum's own loop, on this thread: a BLAS product of this size starts threads that contend with the
    # networks' for the cores (on 2 busy cores that tripled the whole check's time; so did torch's 2 threads)
    coefficients = np.einsum("mk,jk->mj", blocks.reshape(-1, BLOCK * BLOCK), _HIGH_DCT, optimize=False)
    return (np.abs(coefficients) < NEAR_ZERO).reshape(n, -1).mean(axis=1, dtype=np.float64)


def _jpeg(x):
    """JPEG's trace: the near-zero share of high-frequency DCT coefficients on JPEG's grid minus off it (NaN
    under 12x12 pixels, where the shifted grid holds no block)."""
    if min(x.shape[1:]) < BLOCK + BLOCK // 2:
        return np.full(len(x), np.nan)
    return _near_zero_share(x, 0) - _near_zero_share(x, BLOCK // 2)


def _percentiles(x, fractions):
    """The grey level (0-255) below which each of ``fractions`` of each image's pixels lie: (len(fractions), N)."""
    n = len(x)
    levels = np.clip(np.rint(x), 0, LEVELS).astype(np.int32).reshape(n, -1)
    levels += (np.arange(n, dtype=np.int32) * 256)[:, None]
    counts = np.bincount(levels.ravel(), minlength=n * 256).reshape(n, 256).cumsum(axis=1)
    pixels = levels.shape[1]
    return np.stack([(counts < f * pixels).sum(axis=1) for f in fractions]).astype(np.float64)


def _chunk_statistics(x, tile_shape):
    n, height, width = x.shape
    energy = _laplacian_energy(x)
    even = x[:, : height // 2 * 2, : width // 2 * 2]
    half = even.reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    out = {"noise": _noise(x), "sharpness": np.log10(energy + _EPS),
           "detail": np.log2((energy + _EPS) / (_laplacian_energy(half) + _EPS)), "jpeg": _jpeg(x)}
    out["p1"], out["p50"], out["p99"] = _percentiles(x, (0.01, 0.5, 0.99))
    extent = min(height / tile_shape[0], width / tile_shape[1]) if tile_shape else math.nan
    out["extent"] = np.full(n, extent)
    return out


def image_statistics(images, tile_shape=None):
    """``{statistic: (N,) float64}`` of images at the training scale: one (H, W) or a batch (N, H, W), float 0-1
    (or uint8 0-255).

    ``tile_shape`` (the run's (H, W)) gives ``extent``; without it ``extent`` is NaN. A statistic an image is
    too small for (under 3x3 pixels, 6x6 for ``detail``, 12x12 for ``jpeg``) is NaN, and NaN is never
    out of range. The batch goes through in chunks of :data:`CHUNK` images.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"images: expected (H, W) or (N, H, W), got shape {images.shape}")
    return _chunked(images, np.arange(len(images)), tile_shape)


def _chunked(images, indices, tile_shape):
    """:func:`image_statistics` of ``images[indices]``, read :data:`CHUNK` images at a time (no copy of all)."""
    parts = []
    for start in range(0, len(indices), CHUNK):
        chunk = np.asarray(images[indices[start : start + CHUNK]])
        chunk = chunk.astype(np.float32) if chunk.dtype == np.uint8 else chunk.astype(np.float32) * np.float32(LEVELS)
        parts.append(_chunk_statistics(chunk, tile_shape))
    if not parts:
        return {name: np.zeros(0) for name in STATISTICS}
    return {name: np.concatenate([p[name] for p in parts]) for name in STATISTICS}


def thresholds(name, quantiles):
    """``(low, high)`` of statistic ``name`` from the training tiles' ``quantiles`` (``{q: value}``) by its
    :data:`RULES` entry; an unchecked side is -inf / inf."""
    rule = RULES[name]
    if rule.fixed is not None:
        return tuple(float(v) for v in rule.fixed)
    q01, q99 = quantiles[0.01], quantiles[0.99]
    spread = q99 - q01
    low = -math.inf if rule.low is None else q01 - rule.low * spread
    high = math.inf if rule.high is None else q99 + rule.high * spread
    return float(low), float(high)


def training_statistics(images, tile_shape, indices=None):
    """The ``input_stats.json`` content of a run trained on ``images[indices]`` (tiles (N, H, W) float 0-1; all
    without ``indices``): per statistic its :data:`QUANTILES` over the tiles and the thresholds :data:`RULES`
    derive from them."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    stats = _chunked(images, indices, tile_shape)
    out = {"format_version": FORMAT, "tiles": int(len(indices)), "tile_shape": [int(s) for s in tile_shape],
           "quantiles": list(QUANTILES), "statistics": {}}
    for name in STATISTICS:
        values = stats[name][np.isfinite(stats[name])]
        quantiles = dict(zip(QUANTILES, (np.quantile(values, QUANTILES) if len(values) else [math.nan] * 7)))
        low, high = thresholds(name, quantiles)
        out["statistics"][name] = {"unit": RULES[name].unit, "values": [float(quantiles[q]) for q in QUANTILES],
                                   "low": _json_number(low), "high": _json_number(high)}
    return out


def _json_number(value):
    """A threshold for JSON: ``None`` for an unchecked side (JSON has no infinity)."""
    return None if math.isinf(value) else float(value)


@dataclass(frozen=True)
class Finding:
    """One statistic of one image out of the training tiles' range: its value, the range and the likely cause."""

    statistic: str
    value: float
    low: float
    high: float
    cause: str
    _: KW_ONLY
    excess: float = math.inf  # how far beyond the bound, in units of the training tiles' q99 - q01

    @property
    def side(self):
        """``"low"`` or ``"high"``."""
        return "low" if self.value < self.low else "high"

    def message(self):
        """``noise 9.1 grey levels, training tiles up to 6.3: a noisy image?``."""
        rule = RULES[self.statistic]
        unit = f" {rule.unit}" if not rule.unit.startswith("(") else ""
        digits = rule.digits
        bound = f"up to {self.high:.{digits}f}" if self.side == "high" else f"down to {self.low:.{digits}f}"
        return f"{self.statistic} {self.value:.{digits}f}{unit}, training tiles {bound}: {self.cause}"

    def brief(self):
        """``detail 1.82 > 1.09``: the value against the bound it passes."""
        digits = RULES[self.statistic].digits
        bound = f"> {self.high:.{digits}f}" if self.side == "high" else f"< {self.low:.{digits}f}"
        return f"{self.statistic} {self.value:.{digits}f} {bound}"


@dataclass(frozen=True)
class InputCheck:
    """The check of one image: its statistics at the training scale and what is out of range (empty: none)."""

    index: int
    statistics: dict
    findings: tuple = field(default_factory=tuple)  # the farthest out of range first

    @property
    def ok(self):
        """True when every statistic lies within the training tiles' range."""
        return not self.findings

    def message(self):
        """One line: the statistic farthest out of range with its cause, then any other one briefly; empty for
        an image in range."""
        if not self.findings:
            return ""
        first, rest = self.findings[0], self.findings[1:]
        return first.message() + (f" (also out of range: {', '.join(f.brief() for f in rest)})" if rest else "")


def _scale_text(value):
    return f"{value:g}"


class InputRange:
    """The training tiles' range of every statistic (``RUN/input_stats.json``) and the check against it."""

    def __init__(self, content, where="input_stats.json"):
        self.where = str(where)
        try:
            if int(content["format_version"]) > FORMAT:
                raise ValueError(f"format version {content['format_version']} is newer than this tool reads "
                                 f"({FORMAT}); upgrade the package")
            self.tile_shape = tuple(int(s) for s in content["tile_shape"])
            self.tiles = int(content["tiles"])
            entries = content["statistics"]
            self.bounds = {name: (_bound(entries[name]["low"], -math.inf), _bound(entries[name]["high"], math.inf))
                           for name in STATISTICS}
            # q99 - q01 of each statistic (values follow QUANTILES); 0 (a fixed bound such as extent's): the
            # finding is named first
            quantiles = [float(q) for q in content.get("quantiles", QUANTILES)]
            self.spreads = {}
            for name in STATISTICS:
                values = entries[name].get("values") or [math.nan] * len(quantiles)
                spread = float(values[quantiles.index(0.99)]) - float(values[quantiles.index(0.01)])
                self.spreads[name] = spread if spread > 0 else 0.0
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.where}: not a readable input-statistics file ({exc})") from None
        self.content = content

    def check(self, stats, scale=1.0):
        """One :class:`InputCheck` per image of ``stats`` (:func:`image_statistics`); ``scale`` (the ``--scale``
        the images were brought to the training scale with) goes into the suggestions."""
        n = len(next(iter(stats.values())))
        out = []
        for i in range(n):
            values = {name: float(stats[name][i]) for name in STATISTICS}
            findings = []
            for name in STATISTICS:
                value, (low, high) = values[name], self.bounds[name]
                if math.isfinite(value) and not low <= value <= high:
                    beyond = low - value if value < low else value - high
                    excess = beyond / self.spreads[name] if self.spreads[name] else math.inf
                    findings.append(Finding(name, value, low, high, self._cause(name, value < low, values, scale),
                                            excess=excess))
            out.append(InputCheck(i, values, tuple(sorted(findings, key=lambda f: -f.excess))))
        return out

    def _cause(self, name, low, values, scale):
        rule = RULES[name]
        template = rule.low_cause if low else rule.high_cause
        extent = values["extent"] if math.isfinite(values["extent"]) else 1.0
        return template.format(scale=_scale_text(scale), double=_scale_text(2 * scale),
                               fit=_scale_text(scale * extent), factor=_scale_text(round(1 / extent, 1)))


def _bound(value, default):
    return default if value is None else float(value)


def warn_inputs(checks):
    """One :class:`InputWarning` summing up the images of ``checks`` out of range (nothing when none is), issued
    at the first caller outside this package, so that Python shows the user's line."""
    flagged = [c for c in checks if not c.ok]
    if not flagged:
        return
    first = "; ".join(f"image {c.index}: {c.message()}" for c in flagged[:3])
    more = f"; and {len(flagged) - 3} more" if len(flagged) > 3 else ""
    warnings.warn(InputWarning(f"{len(flagged)} of {len(checks)} images are unlike the run's training tiles, so "
                               f"their masks may be wrong (they are predicted anyway): {first}{more}"),
                  stacklevel=_outside_level())


def _outside_level():
    """The ``stacklevel`` of :func:`warn_inputs`'s first caller outside the ``ensemble`` package."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1  # warn_inputs itself
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
