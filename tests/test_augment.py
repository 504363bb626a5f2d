"""Augmentation keeps image and mask aligned."""
import numpy as np
import torch

from ensemble.core.augment import AugmentConfig, build_augmentation, warp_matrices


def test_image_and_mask_stay_aligned():
    """Images encoding their own row and column, run with the same seed, decode back to the mask."""
    h, w = 64, 128
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows = torch.tensor((yy / (h - 1)).astype(np.float32))[None]
    cols = torch.tensor((xx / (w - 1)).astype(np.float32))[None]
    stripes = torch.tensor(1 + (xx // 16 + yy // 16) % 4, dtype=torch.int64)  # classes 1-4, no background
    augment = build_augmentation(AugmentConfig(hflip=True, rotate_degrees=15, zoom_min_scale=0.7))
    for seed in range(20):
        torch.manual_seed(seed)
        row_img, msk = augment(rows, stripes)
        torch.manual_seed(seed)
        col_img, msk_again = augment(cols, stripes)
        assert torch.equal(msk, msk_again)
        assert row_img.shape == (1, h, w) and msk.shape == (h, w)
        assert set(msk.unique().tolist()) <= {0, 1, 2, 3, 4}
        y = np.clip(np.rint(row_img[0].numpy() * (h - 1)).astype(int), 0, h - 1)
        x = np.clip(np.rint(col_img[0].numpy() * (w - 1)).astype(int), 0, w - 1)
        valid = msk.numpy() > 0  # padded areas are background
        agreement = (stripes.numpy()[y[valid], x[valid]] == msk.numpy()[valid]).mean()
        assert agreement > 0.9, agreement  # the rest is rounding on stripe borders
        flipped = (stripes.numpy()[y[valid], (w - 1 - x)[valid]] == msk.numpy()[valid]).mean()
        assert flipped < 0.75  # a mask flipped apart from its image would fail the check above


def test_padding_becomes_background():
    augment = build_augmentation(AugmentConfig(hflip=False, rotate_degrees=30, zoom_min_scale=1.0))
    torch.manual_seed(1)
    _, msk = augment(torch.ones(1, 64, 128), torch.full((64, 128), 2, dtype=torch.int64))
    assert (msk == 0).any() and set(msk.unique().tolist()) <= {0, 2}


def _coordinate_batch(n, h=64, w=128):
    """Images whose two channels are the row and the column of each pixel, masks numbering the pixels 1..h*w."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    images = torch.stack([yy / (h - 1), xx / (w - 1)])[None].repeat(n, 1, 1, 1)
    masks = (1 + yy.long() * w + xx.long())[None].repeat(n, 1, 1)
    return images, masks


def test_batch_image_and_mask_share_one_grid():
    """Every mask pixel comes from the input pixel nearest to where the image was sampled, tile by tile."""
    h, w, n = 64, 128, 24
    images, masks = _coordinate_batch(n, h, w)
    augment = build_augmentation(AugmentConfig(hflip=True, rotate_degrees=15, zoom_min_scale=0.7))
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(3))
    assert out_images.shape == images.shape and out_masks.shape == masks.shape and out_masks.dtype == masks.dtype
    rows = out_images[:, 0] * (h - 1)
    cols = out_images[:, 1] * (w - 1)
    src_rows, src_cols = (out_masks - 1) // w, (out_masks - 1) % w
    # pixels whose bilinear footprint lies inside the tile (not blended with the zero padding)
    inside = (src_rows > 0) & (src_rows < h - 1) & (src_cols > 0) & (src_cols < w - 1) & (out_masks > 0)
    assert inside.float().mean() > 0.5
    assert (rows - src_rows).abs()[inside].max() <= 0.5 + 1e-3
    assert (cols - src_cols).abs()[inside].max() <= 0.5 + 1e-3
    # the tiles were transformed differently: flips in both directions, different crops
    mirrored = (out_images[:, 1, h // 2, -8] < out_images[:, 1, h // 2, 8])
    assert 0 < int(mirrored.sum()) < n
    assert len({tuple(m[h // 2, w // 2 - 1 : w // 2 + 1].tolist()) for m in out_masks}) > n // 2


def test_same_stream_same_batch_and_global_stream_untouched():
    images, masks = _coordinate_batch(8)
    augment = build_augmentation(AugmentConfig(hflip=True, rotate_degrees=10, zoom_min_scale=0.8,
                                               brightness=0.2, contrast=0.2))
    state = torch.get_rng_state()
    a = augment(images, masks, torch.Generator().manual_seed(7))
    b = augment(images, masks, torch.Generator().manual_seed(7))
    c = augment(images, masks, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert float(a[0].min()) >= 0.0 and float(a[0].max()) <= 1.0


def test_off_and_flip_only_are_exact():
    images, masks = _coordinate_batch(16)
    off = build_augmentation(AugmentConfig(hflip=False, rotate_degrees=0, zoom_min_scale=1.0))
    out = off(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out[0], images) and torch.equal(out[1], masks)
    flip = build_augmentation(AugmentConfig(hflip=True, rotate_degrees=0, zoom_min_scale=None))
    out_images, out_masks = flip(images, masks, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(m, masks[0].flip(-1)) for m in out_masks])
    kept = torch.tensor([torch.equal(m, masks[0]) for m in out_masks])
    assert bool((flipped ^ kept).all()) and 0 < int(flipped.sum()) < 16
    assert torch.equal(out_images[flipped], images[flipped].flip(-1)) and torch.equal(out_images[kept], images[kept])


def test_warp_parameters_follow_the_configured_ranges():
    """Zoom keeps 70-100 % of the area inside the tile; rotation stays within ±15 degrees."""
    n, (h, w) = 2000, (64, 128)
    gen = torch.Generator().manual_seed(0)
    zoom = warp_matrices(n, (h, w), AugmentConfig(rotate_degrees=0, zoom_min_scale=0.7), gen)
    area = torch.linalg.det(zoom[:, :, :2])
    assert float(area.min()) >= 0.7 - 1e-9 and float(area.max()) <= 1.0 + 1e-9
    assert 0.81 < float(area.mean()) < 0.85  # uniform in [0.7, 1], less the large crops that do not fit
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]],
                           dtype=torch.float64)
    mapped = torch.einsum("nij,cj->nci", zoom, corners)
    assert float(mapped.abs().max()) <= 1.0 + 1e-9  # the crop lies inside the tile
    aspect = zoom[:, 0, 0] / zoom[:, 1, 1]  # crop aspect relative to the tile's
    assert float(aspect.min()) >= 0.9 - 1e-9 and float(aspect.max()) <= 1 / 0.9 + 1e-9
    rotation = warp_matrices(n, (h, w), AugmentConfig(rotate_degrees=15, zoom_min_scale=1.0), gen)
    angles = torch.rad2deg(torch.atan2(rotation[:, 1, 0] * h / w, rotation[:, 0, 0]))
    assert float(angles.abs().max()) <= 15 + 1e-6 and float(angles.abs().mean()) > 6
    assert torch.allclose(torch.linalg.det(rotation[:, :, :2]), torch.ones(n, dtype=torch.float64))
