"""Augmentation keeps image and mask aligned."""
import numpy as np
import torch

from ensemble.core.augment import AugmentConfig, build_augmentation


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
