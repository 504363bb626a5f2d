"""Paired image/mask augmentation of a whole batch at once.

Every tile gets its own random parameters — zoom (a random resized crop), rotation,
horizontal flip, optional brightness/contrast, optional degradations of the image (noise, blur,
exposure, resampling, JPEG: :func:`ensemble.core.corruptions.degrade`) — and the geometric ones are applied to the
batch as one affine warp: one ``affine_grid`` and one ``grid_sample`` per batch for the
images (bilinear) and one for the masks (nearest neighbour, on the same grid, so image and
mask stay aligned), the flip included. Areas the warp brings in from outside the tile are
0: black in the image, background in the mask. With rotation and zoom off, flips are exact
mirrors and nothing is resampled.

The parameters are drawn from a ``torch.Generator`` the caller passes (training passes each
network's own stream, seeded by (seed, network, epoch)); without one they come from the
global torch stream.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .corruptions import DegradeConfig, degrade

#: Draws per tile for the zoom crop: a draw whose crop does not fit in the tile is redrawn,
#: up to this many times, then the whole tile is kept (torchvision's ``RandomResizedCrop`` rule).
ZOOM_ATTEMPTS = 10


@dataclass
class AugmentConfig:
    """What to augment. Zero or ``None`` switches a transform off.

    The class defaults are horizontal flips only, so a config recorded before the degradations existed
    (no ``degrade`` key) still reads as the flips it trained with; the training recipe is :data:`RECIPE`.
    Rotation and zoom resample the tiles, and the batch-norm statistics learnt on resampled tiles misfit
    sharp ones.
    """

    hflip: bool = True
    rotate_degrees: float = 0.0  # each tile turns by an angle uniform in +-rotate_degrees
    zoom_min_scale: float = 1.0  # random resized crop keeps at least this share of the area (1: no zoom)
    brightness: float = 0.0
    contrast: float = 0.0
    degrade: float = 0.0  # share of tiles given random noise, blur, exposure, resampling and JPEG (masks untouched)
    degrade_strength: float = 1.0  # the degradations' ranges scaled (1: DegradeConfig's defaults)

    def to_dict(self):
        """Plain dict for JSON configs."""
        return asdict(self)

    @property
    def warps(self):
        """True when a rotation or a zoom is on (a resampling warp, not only flips and colour)."""
        return bool(self.rotate_degrees) or bool(self.zoom_min_scale and self.zoom_min_scale < 1.0)


#: The training recipe's augmentation (:class:`~members.config.TrainConfig`'s default): flips, and random
#: degradations of the image on 60 % of the tiles at 0.7 of :class:`DegradeConfig`'s ranges (still past the
#: robustness benchmark's middle severity). At a reduced budget this held the baseline under blur, JPEG and
#: resampling at the least clean cost of the recipes tried (docs/experiments.md, "Robust training").
RECIPE = AugmentConfig(degrade=0.6, degrade_strength=0.7)


def _uniform(n, low, high, generator, shape=()):
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64) * (high - low) + low


def zoom_crops(n, config, generator):
    """Per tile crop width and height as shares of the tile and crop centre in normalised coordinates.

    Same distribution as torchvision's ``RandomResizedCrop(scale=(zoom_min_scale, 1),
    ratio=(r * 0.9, r / 0.9))`` with r the tile's aspect ratio, without rounding to whole pixels:
    area share uniform, aspect factor log-uniform in [0.9, 1/0.9], redrawn while the crop does
    not fit (then the whole tile), position uniform over the places the crop fits.
    Returns float64 tensors ``(share_w, share_h, centre_x, centre_y)``, each (n,).
    """
    area = _uniform(n, config.zoom_min_scale, 1.0, generator, (ZOOM_ATTEMPTS,))
    aspect = torch.exp(_uniform(n, math.log(0.9), -math.log(0.9), generator, (ZOOM_ATTEMPTS,)))
    share_w, share_h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (share_w <= 1) & (share_h <= 1)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first draw that fits (0 when none does)
    any_fit = fits.any(dim=1)
    share_w = torch.where(any_fit, share_w.gather(1, first)[:, 0], 1.0)
    share_h = torch.where(any_fit, share_h.gather(1, first)[:, 0], 1.0)
    position = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    centre_x = (1 - share_w) * (2 * position[:, 0] - 1)
    centre_y = (1 - share_h) * (2 * position[:, 1] - 1)
    return share_w, share_h, centre_x, centre_y


def warp_matrices(n, size, config, generator):
    """``affine_grid`` matrices (n, 2, 3), float64: for every output pixel, where to read in the input.

    The tile is zoomed (cropped and resized back to ``size``), then rotated about its centre
    by an angle uniform in ±``rotate_degrees`` (in pixels, so a 64x128 tile turns without
    shearing).
    """
    h, w = size
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if config.zoom_min_scale and config.zoom_min_scale < 1.0:
        share_w, share_h, centre_x, centre_y = zoom_crops(n, config, generator)
    else:
        share_w = share_h = torch.ones(n, dtype=torch.float64)
        centre_x = centre_y = torch.zeros(n, dtype=torch.float64)
    if config.rotate_degrees:
        angle = torch.deg2rad(_uniform(n, -config.rotate_degrees, config.rotate_degrees, generator))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation in pixel units, written in normalised coordinates (x spans w/2 pixels, y h/2)
        rotation = torch.stack([torch.stack([cos, -sin * h / w], 1), torch.stack([sin * w / h, cos], 1)], 1)
    else:
        rotation = theta[:, :, :2].clone()
    theta[:, 0, :2] = share_w[:, None] * rotation[:, 0]
    theta[:, 1, :2] = share_h[:, None] * rotation[:, 1]
    theta[:, 0, 2], theta[:, 1, 2] = centre_x, centre_y
    return theta


def adjust_colour(images, config, generator):
    """Brightness and contrast jitter per tile, in random order, as torchvision's ``ColorJitter``."""
    n = len(images)
    shape = (n, 1, 1, 1)
    out = images
    steps = []
    if config.brightness:
        factor = _uniform(n, max(0.0, 1 - config.brightness), 1 + config.brightness, generator).float()
        factor = factor.to(images.device).view(shape)
        steps.append(lambda x, f=factor: (x * f).clamp(0, 1))
    if config.contrast:
        factor = _uniform(n, max(0.0, 1 - config.contrast), 1 + config.contrast, generator).float()
        factor = factor.to(images.device).view(shape)
        steps.append(lambda x, f=factor: (f * x + (1 - f) * x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1))
    if len(steps) == 1:
        out = steps[0](images)
    elif len(steps) == 2:
        reverse = (torch.rand(n, generator=generator) < 0.5).to(images.device).view(shape)
        out = torch.where(reverse, steps[0](steps[1](images)), steps[1](steps[0](images)))
    return out


class BatchAugmentation:
    """``f(images, masks, generator=None) -> (images, masks)`` for a batch of tiles.

    ``images`` (B, C, H, W) float 0-1 and ``masks`` (B, H, W) integer class ids, on any
    device; a single tile, image (C, H, W) and mask (H, W), works too. Every tile draws
    its own parameters from ``generator`` (a CPU ``torch.Generator``; ``None``: the global
    stream), a fixed number of draws per batch, so a stream seeded the same way gives the
    same batches. :meth:`with_maps` also moves per-pixel float maps (a teacher's logits) with the tiles.
    """

    def __init__(self, config=None):
        self.config = config or AugmentConfig()

    def __call__(self, images, masks, generator=None):
        if images.ndim == 3:
            out_images, out_masks = self(images[None], masks[None], generator)
            return out_images[0], out_masks[0]
        images, masks, _ = self.with_maps(images, masks, None, generator)
        return images, masks

    def with_maps(self, images, masks, maps, generator=None):
        """``(images, masks, (maps, coverage))`` of a batch: ``maps`` (B, K, H, W) float, or ``None``, get the
        tiles' flips and warps (bilinear), never the photometric changes or degradations, so they stay the clean
        tile's; ``coverage`` (B, H, W) is the share of each output pixel inside the source tile (1 unless a warp
        reaches past it). The random draws are the same with or without ``maps``."""
        config, n, size = self.config, len(images), tuple(images.shape[-2:])
        coverage = None if maps is None else torch.ones((n, *size), dtype=maps.dtype, device=maps.device)
        if config.warps:
            theta = warp_matrices(n, size, config, generator)
            if config.hflip:  # a mirrored tile reads column -x for output column x
                theta[torch.rand(n, generator=generator) < 0.5, :, 0] *= -1
            grid = F.affine_grid(theta.to(images.device, images.dtype), (n, 1, *size), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            warped = F.grid_sample(masks[:, None].to(grid.dtype), grid, mode="nearest", padding_mode="zeros",
                                   align_corners=False)
            masks = warped[:, 0].to(masks.dtype)
            if maps is not None:
                grid = grid.to(maps.dtype)
                warped = F.grid_sample(torch.cat([maps, coverage[:, None]], 1), grid, mode="bilinear",
                                       padding_mode="zeros", align_corners=False)
                maps, coverage = warped[:, :-1], warped[:, -1]
        elif config.hflip:  # flips alone: an exact mirror, no resampling
            flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
            masks = torch.where(flip.view(n, 1, 1), masks.flip(-1), masks)
            if maps is not None:
                maps = torch.where(flip.view(n, 1, 1, 1).to(maps.device), maps.flip(-1), maps)
        images = adjust_colour(images, config, generator)
        if config.degrade:
            images = degrade(images, DegradeConfig.of(config.degrade, config.degrade_strength), generator)
        return images.clamp(0.0, 1.0), masks, (None if maps is None else (maps, coverage))


def build_augmentation(config=None):
    """The :class:`BatchAugmentation` of ``config`` (default :class:`AugmentConfig`)."""
    return BatchAugmentation(config)


def mirror_averaged_logits(forward, images):
    """Flip test-time augmentation: ``forward``'s logits of ``images`` (N, C, H, W) averaged with those of their
    horizontal mirror, mirrored back (the flip training's ``hflip`` draws)."""
    return (forward(images) + forward(images.flip(-1)).flip(-1)) / 2
