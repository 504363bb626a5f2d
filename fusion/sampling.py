"""Seeded pixel sub-sampling for fitting fusers on large calibration sets.

Fusers are per-pixel (1x1) or small-window (k x k) maps, so they can be fitted on a random
sample of pixel positions instead of every pixel of every tile. A k x k window around a
pixel, zero outside the tile, is exactly what ``conv2d(padding=k // 2)`` sees there, so a
linear layer on the flattened windows trains the same map as the convolution.
"""
import numpy as np
import torch


def split_tiles(n_tiles, holdout_fraction, rng):
    """Split tile indices into (train, holdout) index arrays with ``rng``; holdout may be empty.

    The holdout gets ``round(holdout_fraction * n_tiles)`` tiles, at least one and at most
    ``n_tiles - 1`` when ``holdout_fraction > 0`` and there are at least two tiles.
    """
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    order = rng.permutation(n_tiles)
    n_holdout = 0
    if holdout_fraction > 0 and n_tiles >= 2:
        n_holdout = min(max(int(round(holdout_fraction * n_tiles)), 1), n_tiles - 1)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def sample_windows(member_logits, masks, tiles, max_pixels, rng, *, kernel_size=1, labeled_only=False):
    """Sample up to ``max_pixels`` pixels of ``tiles`` (without replacement) with ``rng``.

    ``labeled_only`` draws among the pixels whose mask is not 0 (``ValueError`` if there are none).
    Returns ``(windows, labels)``: float32 (P, C, k, k) windows of ``member_logits``
    centred on the pixels (zero outside the tile) and int64 (P,) mask labels.
    """
    n_tiles, channels, height, width = member_logits.shape
    per_tile = height * width
    tiles = np.asarray(tiles)
    if labeled_only:
        candidates = np.flatnonzero(np.asarray(masks[torch.as_tensor(tiles)] > 0).reshape(-1))
        if len(candidates) == 0:
            raise ValueError("no labeled pixels (mask 1-4) to fit on")
        flat = np.sort(candidates[rng.choice(len(candidates), size=min(int(max_pixels), len(candidates)),
                                             replace=False)])
    else:
        total = len(tiles) * per_tile
        flat = np.sort(rng.choice(total, size=min(int(max_pixels), total), replace=False))
    tile = torch.as_tensor(tiles[flat // per_tile], dtype=torch.int64)
    pos = torch.as_tensor(flat % per_tile, dtype=torch.int64)
    row, col = pos // width, pos % width
    labels = masks[tile, row, col].long()
    pad = kernel_size // 2
    windows = torch.zeros(len(flat), channels, kernel_size, kernel_size)
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            r, c = row + dy - pad, col + dx - pad
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            values = member_logits[tile, :, r.clamp(0, height - 1), c.clamp(0, width - 1)]
            windows[:, :, dy, dx] = torch.where(inside[:, None], values.float(), 0.0)
    if not torch.isfinite(windows).all():
        raise ValueError("member logits contain NaN or infinite values")
    return windows, labels
