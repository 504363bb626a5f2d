"""Images of any size through networks trained on fixed tiles: scaling and Gaussian-weighted sliding windows.

The grid and the weights follow nnU-Net v2's ``predict_sliding_window_return_logits``: windows of the
run's tile size, ``step`` (a fraction of the tile) apart at most, spread evenly so that the first
window starts at the top-left corner and the last ends at the border; every window's logits are
weighted by a Gaussian importance map (sigma = tile / 8 per axis, peak 1 at the window's centre),
summed, and divided by the summed weights. Images smaller than a tile are padded by repeating their
edge pixels (centred, so the image sits under the Gaussian's peak) and cropped back.

Each window's weight is divided by the summed weights before it is accumulated, so a pixel that one
window covers gets that window's logit times exactly 1.0: an image of one tile, or a frame cut into
non-overlapping tiles (step 1.0 where the tiles fit), reproduces the tile-by-tile logits bit for bit.

Scale: ``scale`` is the input's pixels per training pixel. Images are brought to the training scale
(:func:`to_training_scale`) by exact area averaging, a box filter: what made the 64x128 tiles from
AI4Mars' 256x256 copies (2x2 means). Each output pixel is the mean of the input area it covers, the
input pixels cut by its border counted with the share inside (OpenCV's ``INTER_AREA``; PIL's
``Image.BOX`` weighs whole pixels by their centres instead), so an integer factor k gives the plain
k x k block means and a non-integer one (1.5: 192 -> 128 pixels) the same filter, not integer windows
of varying size. It runs separably, one weight matrix per axis (``rows @ image @ columns.T``). An axis
that grows (``scale`` < 1) is interpolated bilinearly instead. Class logits are brought back to the
input's size bilinearly, before the argmax.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.defaults import BATCH_SIZE, DEFAULT_STEP
from ..core.errors import EnsembleError
from ..core.resample import bilinear_rows, resample

#: Sigma of the Gaussian importance map as a fraction of the tile (nnU-Net, MONAI ``sigma_scale``).
SIGMA_SCALE = 1 / 8


def check_scale(scale):
    """``scale`` as a float; :class:`EnsembleError` naming ``--scale`` unless it is a finite number > 0."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise EnsembleError(f"--scale: must be a number > 0 (input pixels per training pixel), got {scale!r}")
    return value


def check_step(step):
    """``step`` as a float; :class:`EnsembleError` naming ``--step`` unless 0 < step <= 1."""
    try:
        value = float(step)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise EnsembleError(f"--step: must lie in (0, 1] (the window step as a fraction of the tile), got {step!r}")
    return value


def window_starts(size, tile, step=DEFAULT_STEP):
    """Start offsets of the windows along one axis of ``size`` pixels: nnU-Net's evenly spread grid.

    As few windows as keep neighbours at most ``step * tile`` apart, the first at 0 and the last at
    ``size - tile``; one window at 0 when the axis is no longer than a tile.
    """
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (tile * step)) + 1
    spacing = (size - tile) / (count - 1)
    return [int(round(spacing * i)) for i in range(count)]


def gaussian_importance(tile, sigma_scale=SIGMA_SCALE):
    """(H, W) float32 Gaussian weights of a window: sigma = ``sigma_scale`` * tile per axis, peak 1 at the centre."""
    axes = []
    for size in tile:
        position = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        axes.append(torch.exp(-0.5 * (position / (size * sigma_scale)) ** 2))
    return (axes[0][:, None] * axes[1][None, :]).float()


def pad_to_tile(image, tile):
    """``(padded (H', W'), (top, left))``: ``image`` (H, W) padded by edge repetition, centred, to at least ``tile``."""
    height, width = image.shape
    pad_h, pad_w = max(tile[0] - height, 0), max(tile[1] - width, 0)
    if not pad_h and not pad_w:
        return image, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(image[None, None], (left, pad_w - left, top, pad_h - top), mode="replicate")[0, 0]
    return padded, (top, left)


def window_grid(shape, tile, step=DEFAULT_STEP):
    """The windows' top-left corners ``[(y, x), ...]`` over an image of ``shape`` (at least one tile)."""
    return [(y, x) for y in window_starts(shape[0], tile[0], step) for x in window_starts(shape[1], tile[1], step)]


def stitched_logits(forward, image, tile, step=DEFAULT_STEP, batch_size=BATCH_SIZE):
    """Gaussian-weighted sliding-window logits (C, H, W) float32 of ``forward`` over ``image`` (H, W) float 0-1.

    ``forward`` maps windows (B, 1, *tile) to logits (B, C, *tile); windows go through it
    ``batch_size`` at a time. Returns ``(logits, windows run)``.
    """
    height, width = image.shape
    padded, (top, left) = pad_to_tile(image, tile)
    corners = window_grid(padded.shape, tile, step)
    importance = gaussian_importance(tile)
    total = torch.zeros(padded.shape, dtype=torch.float32)
    for y, x in corners:
        total[y : y + tile[0], x : x + tile[1]] += importance
    out = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        windows = torch.stack([padded[y : y + tile[0], x : x + tile[1]] for y, x in chunk])[:, None]
        logits = forward(windows.contiguous())
        if out is None:
            out = torch.zeros((logits.shape[1], *padded.shape), dtype=torch.float32)
        for (y, x), window_logits in zip(chunk, logits):
            share = importance / total[y : y + tile[0], x : x + tile[1]]
            out[:, y : y + tile[0], x : x + tile[1]] += window_logits * share
        del logits
    return out[:, top : top + height, left : left + width], len(corners)


def training_size(shape, scale):
    """The (H, W) an image of ``shape`` has at the training scale: each side divided by ``scale``, at least 1."""
    return tuple(max(1, int(round(side / scale))) for side in shape)


def to_training_scale(image, scale):
    """``image`` (H, W), (N, H, W) or (N, 1, H, W) float tensor resampled to :func:`training_size` of (H, W).

    Each axis that shrinks is box-averaged: every output pixel is the mean of the input area it covers,
    with fractional weights for the input pixels its border cuts (:func:`~ensemble.core.resample.area_weights`), so
    the mean intensity is kept and an integer factor k gives the k x k block means. Each output pixel covers
    ``size_in / size_out`` input pixels of the actual sizes, so the rounding of :func:`training_size`
    never drops edge pixels. An axis that grows (``scale`` < 1) is interpolated bilinearly
    (``align_corners=False``, :func:`~ensemble.core.resample.bilinear_weights`): there the box filter would be
    nearest-neighbour up to the cells cut by a pixel border, blocky steps the networks would read as texture, while
    bilinear adds none and is how the logits are brought back. The weights are float64, applied in the
    image's float type. An image whose size does not change (``scale`` 1) is returned as it is.
    """
    return resample(image, training_size(image.shape[-2:], scale))


def resize_logits(logits, size):
    """Logits (N, C, h, w) resized bilinearly to ``size``; a channel that is -inf everywhere stays -inf.

    Under the ``competition`` objective class 0's logit is -inf on every pixel; interpolating it
    would give NaN, so such channels are interpolated as 0 and set back to -inf.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    dead, finite = _dead_channels(logits)
    resized = F.interpolate(finite, size=tuple(size), mode="bilinear", align_corners=False)
    return resized.masked_fill(dead, -math.inf)


def _dead_channels(logits):
    """``(dead (N, C, 1, 1) bool, logits with those channels at 0)``: the channels that are -inf everywhere,
    which interpolation would turn into NaN, set aside to be put back after it."""
    dead = torch.isneginf(logits).flatten(2).all(dim=2)[..., None, None]
    return dead, torch.where(dead, torch.zeros((), dtype=logits.dtype), logits)


#: Output rows resized at once by :func:`resized_bands`: a band's logits, not the whole image's, are held.
BAND_ROWS = 64


def resized_bands(logits, size, band_rows=BAND_ROWS):
    """Yield ``(top, bottom, band)``: :func:`resize_logits` of ``logits`` (N, C, h, w) to ``size``, band by band.

    Each band holds output rows ``top:bottom`` (N, C, rows, W): its rows are interpolated from the source
    rows they fall between, then its columns as ``F.interpolate`` does, so the bands together equal
    the whole resize up to float rounding, and an image's logits are never held at the input size.
    """
    height, width = size
    if tuple(logits.shape[-2:]) == tuple(size):
        for top in range(0, height, band_rows):
            yield top, min(top + band_rows, height), logits[..., top : top + band_rows, :]
        return
    dead, finite = _dead_channels(logits)
    for top in range(0, height, band_rows):
        bottom = min(top + band_rows, height)
        low, high, weight = bilinear_rows(logits.shape[-2], height, top, bottom)
        rows = torch.lerp(finite[..., low, :], finite[..., high, :], weight[:, None])
        band = F.interpolate(rows, size=(bottom - top, width), mode="bilinear", align_corners=False)
        yield top, bottom, band.masked_fill(dead, -math.inf)


def as_image_tensor(image):
    """A float32 0-1 (H, W) numpy image as a contiguous torch tensor (no copy when it already is one)."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
