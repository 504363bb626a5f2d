"""Image corruptions of grey tiles: the robustness benchmark's fixed set and the training recipe's degradations.

Everything works on batches of float images in 0-1, (N, H, W) or (N, 1, H, W), and returns 8-bit values
(``round(255 x) / 255``), because a user's image is an 8-bit file: the data's tiles are uint8 and so is every
PNG or JPEG that reaches ``ensemble predict``. Parameters are per tile and every random draw comes from a
``torch.Generator`` the caller passes, so a seed fixes the result.

**The benchmark** (:data:`CORRUPTIONS`): 13 corruptions in five families, each at three severities set for
64x128 grey tiles that are already 2x2 means of the camera's pixels (so noise is lower and edges sharper than
in a full frame): the first severity is what a careful user's image can carry (a quality-90 JPEG, two grey
levels of noise), the third what an everyday product carries at worst (quality 50, eight grey levels).
ImageNet-C's levels (Gaussian noise from 20 grey levels, JPEG from quality 25) are far stronger than any
NavCam product. ``corrupt(images, name, severity, seed=...)`` applies one. The resampling family changes the
size: a tile resized by a factor ``f`` is predicted with ``--scale f`` (:attr:`Corruption.scale`).

**Held out**: the corruptions with ``trained=False`` (shot noise, defocus and motion blur, Lanczos resampling)
are never drawn by the training recipe's :func:`degrade`, so the benchmark also measures how the recipe
generalises to corruptions it never saw, not only the invariances it was fitted for.

**Training** (:class:`DegradeConfig`, :func:`degrade`): every tile of a batch is degraded with probability
``share``; a degraded tile draws each of blur, noise, exposure, resampling and JPEG with probability
``op_probability``, at a strength uniform over a range wider than the benchmark's middle severity. The
masks are untouched: these are photometric and degradation changes of the image only (the resampling goes
down or up and back to the tile's size with the resampler of ``predict --scale``, :mod:`ensemble.core.resample`).

Batched torch code (noise, exposure, per-tile blur kernels) and Pillow for JPEG and resampling, what most users
save and resize their images with (docs/design.md, Dependencies, says why).
"""
import hashlib
import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .resample import resample

LEVELS = 255.0  # grey levels of an 8-bit image
#: Pillow's resampling filters by name; all of them antialias when they shrink an image.
RESAMPLERS = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
              "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def quantize(images):
    """``images`` clamped to 0-1 and rounded to 8-bit levels (still float)."""
    return torch.round(images.clamp(0.0, 1.0) * LEVELS) / LEVELS


def _per_tile(values, n):
    """``values`` (a number or n numbers) as a float64 tensor (n,)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    return values.expand(n).clone() if values.ndim == 0 else values


def _view(values, images):
    """Per-tile ``values`` (n,) shaped to broadcast over ``images`` (N, 1, H, W) in their dtype."""
    return values.to(images.dtype).view(-1, 1, 1, 1)


def add_gaussian_noise(images, sigma, generator=None):
    """Additive Gaussian noise of ``sigma`` (0-1 units, per tile) on images (N, 1, H, W)."""
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return images + noise * _view(_per_tile(sigma, len(images)), images)


def add_shot_noise(images, photons, generator=None):
    """Signal-dependent (Poisson) noise: ``photons`` photo-electrons at white, per tile; the grey level is the
    photon count divided by it, so the noise's standard deviation at grey ``x`` is ``sqrt(x / photons)``."""
    scale = _view(_per_tile(photons, len(images)), images)
    return torch.poisson(images.clamp(min=0) * scale, generator=generator) / scale


def gaussian_kernels(sigma, size):
    """Normalised Gaussian kernels (n, size, size) of standard deviation ``sigma`` pixels per tile."""
    sigma = torch.atleast_1d(torch.as_tensor(sigma, dtype=torch.float64))
    position = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    axis = torch.exp(-0.5 * (position[None] / sigma.clamp(min=1e-6)[:, None]) ** 2)
    kernels = axis[:, :, None] * axis[:, None, :]
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


#: Sub-samples per kernel cell (per axis) when a disk or a line is rasterised with antialiasing.
SUPERSAMPLE = 8


def _cell_offsets(size):
    """Sub-sample coordinates (size*S, ) of a kernel of ``size`` cells, centred on 0."""
    steps = (torch.arange(size * SUPERSAMPLE, dtype=torch.float64) + 0.5) / SUPERSAMPLE
    return steps - size / 2


def disk_kernels(radius, size):
    """Defocus: normalised disks of ``radius`` pixels (n,), each cell weighted by the share of it the disk covers."""
    radius = torch.atleast_1d(torch.as_tensor(radius, dtype=torch.float64))
    offsets = _cell_offsets(size)
    inside = (offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2) <= radius[:, None, None] ** 2
    cover = inside.double().view(len(radius), size, SUPERSAMPLE, size, SUPERSAMPLE).mean(dim=(2, 4))
    return cover / cover.sum(dim=(1, 2), keepdim=True)


def motion_kernels(length, angle, size):
    """Motion blur: normalised line segments of ``length`` pixels at ``angle`` radians (n,), centred, drawn
    by accumulating many points along the segment with bilinear weights."""
    length = torch.atleast_1d(torch.as_tensor(length, dtype=torch.float64))
    angle = torch.atleast_1d(torch.as_tensor(angle, dtype=torch.float64))
    n, points = len(length), 16 * size
    t = (torch.arange(points, dtype=torch.float64) + 0.5) / points - 0.5  # -0.5 .. 0.5 along the segment
    x = (size - 1) / 2 + t[None] * length[:, None] * torch.cos(angle)[:, None]
    y = (size - 1) / 2 + t[None] * length[:, None] * torch.sin(angle)[:, None]
    kernels = torch.zeros(n, size * size, dtype=torch.float64)
    x0, y0 = x.floor(), y.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            cx, cy = (x0 + dx).long().clamp(0, size - 1), (y0 + dy).long().clamp(0, size - 1)
            kernels.scatter_add_(1, cy * size + cx, weight)
    kernels = kernels.view(n, size, size)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def convolve(images, kernels):
    """Each tile of ``images`` (N, 1, H, W) filtered by its own kernel (N, k, k), borders reflected."""
    n, _, height, width = images.shape
    pad = kernels.shape[-1] // 2
    padded = F.pad(images.reshape(1, n, height, width), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(padded, kernels.to(images.dtype)[:, None], groups=n)
    return out.view(n, 1, height, width)


def adjust_gamma(images, gamma):
    """``x ** gamma`` per tile (gamma < 1 brightens the mid-tones, > 1 darkens them)."""
    return images.clamp(min=0) ** _view(_per_tile(gamma, len(images)), images)


def adjust_contrast(images, factor):
    """Contrast scaled by ``factor`` about each tile's mean grey (torchvision's ``adjust_contrast`` for grey)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (images - mean) * _view(_per_tile(factor, len(images)), images)


def adjust_brightness(images, factor):
    """Exposure gain: every grey level times ``factor`` per tile."""
    return images * _view(_per_tile(factor, len(images)), images)


def jpeg(images, quality):
    """Each tile (N, 1, H, W) saved as a JPEG of its own ``quality`` (1-100) by Pillow and decoded again."""
    quality = _per_tile(quality, len(images)).round().long().tolist()
    pixels = np.round(images.clamp(0, 1).numpy() * LEVELS).astype(np.uint8)
    out = np.empty_like(pixels)
    for i, q in enumerate(quality):
        buffer = io.BytesIO()
        Image.fromarray(pixels[i, 0]).save(buffer, format="JPEG", quality=int(q))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i, 0] = np.asarray(decoded)
    return torch.from_numpy(out).to(images.dtype) / LEVELS


def resized_size(shape, factor):
    """(H, W) of an image of ``shape`` resized by ``factor``: each side times ``factor``, rounded, at least 1."""
    return tuple(max(1, int(round(side * factor))) for side in shape)


def resize_tile(image, size, resampler):
    """One image (H, W) float 0-1 resized to ``size`` (h, w) by Pillow's ``resampler`` (:data:`RESAMPLERS`) on
    its 8-bit values, as a saved image is resized."""
    pixels = np.round(image.clamp(0, 1).numpy() * LEVELS).astype(np.uint8)
    resized = Image.fromarray(pixels).resize((size[1], size[0]), RESAMPLERS[resampler])
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / LEVELS)


def round_trip(images, factor, resampler):
    """Each tile (N, 1, H, W) resized by its ``factor`` with its ``resampler`` name (8-bit, as a saved image),
    then back to (H, W) by :func:`~ensemble.core.resample.resample`: what ``predict --scale factor`` does with
    a user's resized image."""
    n, _, height, width = images.shape
    factor = _per_tile(factor, n).tolist()
    out = images.clone()
    for i, (f, name) in enumerate(zip(factor, resampler)):
        size = resized_size((height, width), f)
        if size == (height, width):
            continue
        out[i, 0] = resample(resize_tile(images[i, 0], size, name), (height, width)).to(images.dtype)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class Corruption:
    """One corruption of the benchmark: its family, its parameter at severities 1-3 and what it means."""

    name: str
    family: str
    levels: tuple
    parameter: str
    trained: bool  # False: held out of the training recipe (:func:`degrade` never draws it)

    def level(self, severity):
        """The parameter at ``severity`` (1, 2 or 3)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity: must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}")
        return self.levels[severity - 1]

    def scale(self, severity):
        """The ``--scale`` a corrupted tile is predicted with: the resize factor for resampling, else 1."""
        return float(self.level(severity)) if self.family == "resample" else 1.0


#: Severities of every corruption.
SEVERITIES = (1, 2, 3)

#: Resize factors of the resampling family: sizes that stay whole numbers of pixels for a 64x128 tile.
DOWN_FACTORS = (0.875, 0.75, 0.625)
UP_FACTORS = (1.25, 1.5, 1.75)

#: The benchmark's corruptions, by family; ``trained=False`` marks the held-out ones.
CORRUPTIONS = (
    Corruption("gaussian_noise", "noise", (2, 4, 8), "standard deviation, grey levels", True),
    Corruption("shot_noise", "noise", (8000, 2000, 500), "photons at white (Poisson)", False),
    Corruption("jpeg", "jpeg", (90, 75, 50), "JPEG quality", True),
    Corruption("gaussian_blur", "blur", (0.5, 0.75, 1.0), "standard deviation, pixels", True),
    Corruption("defocus_blur", "blur", (0.75, 1.0, 1.5), "disk radius, pixels", False),
    Corruption("motion_blur", "blur", (2, 3, 5), "length, pixels (random direction per tile)", False),
    Corruption("gamma", "exposure", (1.2, 1.45, 1.8), "gamma, or its inverse (random per tile)", True),
    Corruption("contrast", "exposure", (0.85, 0.7, 0.55), "contrast factor, or its inverse (random per tile)", True),
    Corruption("brightness", "exposure", (0.1, 0.2, 0.3), "gain 1 + g or 1 - g (random per tile)", True),
    Corruption("downsample_box", "resample", DOWN_FACTORS, "resize factor, area (box) filter", True),
    Corruption("upsample_bilinear", "resample", UP_FACTORS, "resize factor, bilinear filter", True),
    Corruption("upsample_bicubic", "resample", UP_FACTORS, "resize factor, bicubic filter", True),
    Corruption("downsample_lanczos", "resample", DOWN_FACTORS, "resize factor, Lanczos filter", False),
)

#: Families in report order.
FAMILIES = ("noise", "jpeg", "blur", "exposure", "resample")

_BY_NAME = {c.name: c for c in CORRUPTIONS}


def get_corruption(name):
    """The :class:`Corruption` called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def corruption_generator(seed, name, severity):
    """The random stream of one corruption at one severity: the same for a given seed on every machine."""
    digest = hashlib.sha256(f"{seed}:{name}:{severity}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _signs(n, generator):
    """+1 or -1 per tile, each with probability 1/2."""
    return torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)


def _kernel_size(extent):
    """An odd kernel size that holds a blur reaching ``extent`` pixels from the centre."""
    return 2 * max(1, math.ceil(extent)) + 1


def _apply(images, corruption, value, generator):
    """``corruption`` at parameter ``value`` on images (N, 1, H, W): the result before 8-bit rounding."""
    n, name = len(images), corruption.name
    if name == "gaussian_noise":
        return add_gaussian_noise(images, value / LEVELS, generator)
    if name == "shot_noise":
        return add_shot_noise(images, value, generator)
    if name == "jpeg":
        return jpeg(images, value)
    if name == "gaussian_blur":
        return convolve(images, gaussian_kernels(torch.full((n,), float(value)), _kernel_size(3 * value)))
    if name == "defocus_blur":
        return convolve(images, disk_kernels(torch.full((n,), float(value)), _kernel_size(value)))
    if name == "motion_blur":
        angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        return convolve(images, motion_kernels(torch.full((n,), float(value)), angle, _kernel_size(value / 2)))
    if name == "gamma":
        return adjust_gamma(images, value ** _signs(n, generator))
    if name == "contrast":
        return adjust_contrast(images, value ** _signs(n, generator))
    if name == "brightness":
        return adjust_brightness(images, 1 + value * _signs(n, generator))
    resampler = name.split("_")[1]
    size = resized_size(images.shape[-2:], value)
    return torch.stack([resize_tile(tile[0], size, resampler) for tile in images])[:, None]


def corrupt(images, name, severity, *, seed=0):
    """Tiles ``images`` (N, H, W) float 0-1 with corruption ``name`` at ``severity``, as 8-bit values (float32).

    The random draws come from :func:`corruption_generator` (seed, name, severity), so every model of a
    benchmark sees the same corrupted tiles. The resampling family returns tiles of another size
    (:func:`resized_size`), to be predicted with ``--scale`` :meth:`Corruption.scale`.
    """
    corruption = get_corruption(name)
    value = corruption.level(severity)
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if tensor.ndim != 3:
        raise ValueError(f"images: expected (N, H, W), got shape {tuple(tensor.shape)}")
    out = _apply(tensor[:, None], corruption, value, corruption_generator(seed, name, severity))
    return quantize(out)[:, 0].numpy()


# ----------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class DegradeConfig:
    """The training recipe's random degradations; ``share`` 0 switches them off.

    The ranges (the defaults, at ``strength`` 1) are wider than the benchmark's middle severity, and each
    strength is drawn uniformly (the factors log-uniformly) from none to the range's end, so a network sees
    mild and strong versions. Only the benchmark's trained corruptions are drawn: Gaussian noise, Gaussian
    blur, gamma, contrast, gain, resampling with the box, bilinear and bicubic filters, JPEG.
    """

    share: float = 0.0  # probability that a tile is degraded at all (the rest stay clean)
    op_probability: float = 0.5  # probability of each operation in a degraded tile
    noise_sigma: float = 10.0  # Gaussian noise up to this many grey levels
    blur_sigma: float = 1.2  # Gaussian blur of standard deviation up to this many pixels
    gamma: float = 2.0  # gamma log-uniform in [1 / gamma, gamma]
    contrast: float = 0.5  # contrast factor log-uniform in [contrast, 1 / contrast]
    brightness: float = 0.35  # gain uniform in [1 - brightness, 1 + brightness]
    resample: float = 2.0  # resize factor log-uniform in [1 / resample, resample], then back
    jpeg_quality: float = 30.0  # JPEG quality uniform in [jpeg_quality, 95]

    @classmethod
    def of(cls, share, strength=1.0):
        """The default ranges scaled by ``strength`` (0: none; 1: the defaults), ``share`` of the tiles degraded."""
        base = cls()
        return cls(share=share, op_probability=base.op_probability, noise_sigma=base.noise_sigma * strength,
                   blur_sigma=base.blur_sigma * strength, gamma=base.gamma ** strength,
                   contrast=base.contrast ** strength, brightness=min(base.brightness * strength, 0.95),
                   resample=base.resample ** strength,
                   jpeg_quality=max(1.0, 95 - (95 - base.jpeg_quality) * strength))

    def to_dict(self):
        """Plain dict for JSON configs."""
        return asdict(self)


#: Filters the training recipe resizes with (Lanczos is held out for the benchmark).
TRAINED_RESAMPLERS = ("box", "bilinear", "bicubic")


def _log_uniform(n, bound, generator):
    """Factors log-uniform in [1 / bound, bound] (all 1 when bound <= 1)."""
    spread = math.log(max(bound, 1.0))
    return torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * spread)


def degrade(images, config, generator=None):
    """Randomly degraded copies of training tiles (N, 1, H, W) float 0-1, as 8-bit values; masks are untouched.

    Every tile's choices and strengths are drawn first, for all tiles, from ``generator``; a generator seeded the
    same way gives the same batch.
    """
    n = len(images)
    uniform = lambda: torch.rand(n, generator=generator, dtype=torch.float64)  # noqa: E731
    chosen = uniform() < config.share
    ops = {op: chosen & (uniform() < config.op_probability) for op in ("blur", "noise", "exposure", "resample", "jpeg")}
    blur_sigma = uniform() * config.blur_sigma
    noise_sigma = uniform() * config.noise_sigma / LEVELS
    gamma, contrast = _log_uniform(n, config.gamma, generator), _log_uniform(n, 1 / config.contrast, generator)
    gain = 1 + (uniform() * 2 - 1) * config.brightness
    factor = _log_uniform(n, config.resample, generator)
    resampler = torch.randint(len(TRAINED_RESAMPLERS), (n,), generator=generator).tolist()
    quality = config.jpeg_quality + uniform() * (95 - config.jpeg_quality)
    if not chosen.any():
        return images
    out = images.clone()
    idx = torch.nonzero(ops["blur"] & (blur_sigma > 0.2)).flatten()
    if len(idx):
        kernels = gaussian_kernels(blur_sigma[idx], _kernel_size(3 * config.blur_sigma))
        out[idx] = convolve(out[idx], kernels)
    idx = torch.nonzero(ops["noise"]).flatten()
    if len(idx):
        out[idx] = add_gaussian_noise(out[idx], noise_sigma[idx], generator)
    idx = torch.nonzero(ops["exposure"]).flatten()
    if len(idx):
        exposed = adjust_contrast(adjust_brightness(out[idx], gain[idx]).clamp(0, 1), contrast[idx])
        out[idx] = adjust_gamma(exposed.clamp(0, 1), gamma[idx])
    idx = torch.nonzero(ops["resample"]).flatten()
    if len(idx):
        out[idx] = round_trip(quantize(out[idx]), factor[idx], [TRAINED_RESAMPLERS[resampler[i]] for i in idx])
    idx = torch.nonzero(ops["jpeg"]).flatten()
    if len(idx):
        out[idx] = jpeg(out[idx], quality[idx])
    out[chosen] = quantize(out[chosen])
    return out
