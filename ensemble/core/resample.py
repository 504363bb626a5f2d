"""Resampling of grey images by separable weight matrices: exact area (box) averaging down, bilinear up.

What made the 64x128 tiles from AI4Mars' 256x256 copies is a 2x2 mean; :func:`resample` is the same filter for
any factor: every output pixel is the mean of the input area it covers, the input pixels cut by its border
counted with the share inside (OpenCV's ``INTER_AREA``; Pillow's ``BOX`` weighs whole pixels by their centres
instead). An axis that grows is interpolated bilinearly (``align_corners=False``). ``predict --scale`` brings
images to the training scale with it (:func:`ensemble.inference.windows.to_training_scale`), and the training
recipe's resampling degradation comes back to the tile's size with it, so both see the same filter.
"""
import functools

import torch


def bilinear_rows(size_in, size_out, start, stop, dtype=torch.float32):
    """Source rows and weights of output rows ``start:stop`` of a bilinear resize (``align_corners=False``)."""
    dst = torch.arange(start, stop, dtype=torch.float64)
    src = ((dst + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    return low, high, (src - low).to(dtype)


@functools.lru_cache(maxsize=64)
def area_weights(size_in, size_out):
    """(size_out, size_in) float64 box-filter weights: row i holds the share of output pixel i's cell
    ``[i, i + 1) * size_in / size_out`` that each input pixel ``[j, j + 1)`` covers; every row sums to 1.

    Cached per sizes (treat it as read-only).
    """
    ratio = size_in / size_out
    edges = torch.arange(size_out + 1, dtype=torch.float64) * ratio
    edges[-1] = size_in  # the last cell ends exactly at the border, whatever the rounding of the product
    pixel = torch.arange(size_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], pixel[None, :] + 1) - torch.maximum(edges[:-1, None], pixel[None, :]))
    overlap = overlap.clamp(min=0)
    return overlap / overlap.sum(dim=1, keepdim=True)


@functools.lru_cache(maxsize=64)
def bilinear_weights(size_in, size_out):
    """(size_out, size_in) float64 weights of bilinear interpolation with ``align_corners=False``, as
    ``F.interpolate(mode="bilinear")`` samples one axis. Cached per sizes (treat it as read-only)."""
    low, high, weight = bilinear_rows(size_in, size_out, 0, size_out, dtype=torch.float64)
    out = torch.zeros((size_out, size_in), dtype=torch.float64)
    index = torch.arange(size_out)
    out.index_put_((index, low), 1 - weight, accumulate=True)
    out.index_put_((index, high), weight, accumulate=True)
    return out


def axis_weights(size_in, size_out):
    """The (size_out, size_in) float64 weights of one axis: box averaging down, bilinear up, identity kept."""
    if size_out == size_in:
        return torch.eye(size_in, dtype=torch.float64)
    return area_weights(size_in, size_out) if size_out < size_in else bilinear_weights(size_in, size_out)


def resample(image, size):
    """``image`` (H, W), (N, H, W) or (N, 1, H, W) float tensor resampled to ``size`` (h, w): each axis that
    shrinks box-averaged (:func:`area_weights`), each that grows bilinear (:func:`bilinear_weights`), in the
    image's float type; returned as it is when the size does not change."""
    size = tuple(int(side) for side in size)
    if size == tuple(image.shape[-2:]):
        return image
    if not image.is_floating_point():
        image = image.float()
    rows = axis_weights(image.shape[-2], size[0]).to(image.dtype)
    columns = axis_weights(image.shape[-1], size[1]).to(image.dtype)
    return rows @ image @ columns.T
