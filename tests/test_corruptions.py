"""The benchmark's corruptions and the training recipe's degradations: seeded, 8-bit, of the stated strength."""
import math

import numpy as np
import pytest
import torch

from ensemble.core import corruptions as C
from ensemble.core.augment import AugmentConfig, build_augmentation


def textured(n=8, h=64, w=128, seed=0):
    """Tiles with texture at several scales, 8-bit values in 0.15-0.85 (no clipping by mild changes)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, h // 8, w // 8))
    smooth = np.kron(coarse, np.ones((8, 8)))
    fine = rng.random((n, h, w))
    image = 0.15 + 0.7 * (0.7 * smooth + 0.3 * fine)
    return (np.round(image * 255) / 255).astype(np.float32)


@pytest.mark.parametrize("corruption", C.CORRUPTIONS, ids=lambda c: c.name)
def test_every_corruption_is_seeded_8_bit_and_grows_with_severity(corruption):
    images = textured()
    changes = []
    for severity in C.SEVERITIES:
        out = C.corrupt(images, corruption.name, severity, seed=3)
        again = C.corrupt(images, corruption.name, severity, seed=3)
        assert np.array_equal(out, again)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert np.allclose(out * 255, np.round(out * 255), atol=1e-4)  # 8-bit values, like a saved image
        if corruption.family == "resample":
            factor = corruption.level(severity)
            assert out.shape == (len(images), round(64 * factor), round(128 * factor))
            assert corruption.scale(severity) == factor
            assert abs(out.mean() - images.mean()) < 0.01  # resampling keeps the mean grey
        else:
            assert out.shape == images.shape and corruption.scale(severity) == 1.0
            changes.append(np.abs(out - images).mean())
    if changes:
        assert changes[0] > 0.5 / 255 and changes[0] < changes[1] < changes[2], changes


def test_random_corruptions_differ_between_seeds_and_severities_have_their_own_stream():
    images = textured()
    assert not np.array_equal(C.corrupt(images, "gaussian_noise", 2, seed=0), C.corrupt(images, "gaussian_noise", 2,
                                                                                         seed=1))
    first = C.corruption_generator(0, "gaussian_noise", 1).initial_seed()
    assert first != C.corruption_generator(0, "gaussian_noise", 2).initial_seed()
    assert first == C.corruption_generator(0, "gaussian_noise", 1).initial_seed()


def test_noise_has_the_stated_standard_deviation():
    grey = np.full((16, 64, 128), 128 / 255, dtype=np.float32)
    for severity, sigma in zip(C.SEVERITIES, (2, 4, 8)):
        residual = (C.corrupt(grey, "gaussian_noise", severity) - grey) * 255
        assert abs(residual.std() - sigma) < 0.05 * sigma + 0.3  # 8-bit rounding adds 1/12 of a level's variance
    # Poisson: the variance at grey x is x / photons (in 0-1 units)
    photons = C.get_corruption("shot_noise").level(3)
    residual = C.corrupt(grey, "shot_noise", 3) - grey
    assert abs(residual.var() / (0.5 / photons) - 1) < 0.1


def test_blur_kernels_are_normalised_and_shaped():
    assert torch.allclose(C.gaussian_kernels(torch.tensor([0.5, 1.0]), 7).sum(dim=(1, 2)), torch.ones(2,
                                                                                                      dtype=torch.float64))
    disk = C.disk_kernels(torch.tensor([1.5]), 5)[0]
    assert math.isclose(float(disk.sum()), 1.0, rel_tol=1e-9)
    assert disk[2, 2] > 0 and disk[0, 0] == 0  # the corner lies outside a disk of radius 1.5
    line = C.motion_kernels(torch.tensor([4.0]), torch.tensor([0.0]), 7)[0]  # horizontal: one row
    assert math.isclose(float(line.sum()), 1.0, rel_tol=1e-9)
    assert float(line[3].sum()) > 0.99 and float(line[3, 1:6].sum()) > 0.99


def test_jpeg_quality_orders_the_loss():
    images = textured()
    errors = [np.abs(C.jpeg(torch.from_numpy(images)[:, None], q)[:, 0].numpy() - images).mean() for q in (95, 75, 40)]
    assert errors[0] < errors[1] < errors[2]


def test_exposure_goes_both_ways():
    images = textured(n=64)
    out = C.corrupt(images, "gamma", 2)
    shift = (out - images).mean(axis=(1, 2))
    assert (shift > 0.01).any() and (shift < -0.01).any()


def test_degrade_off_leaves_tiles_alone_and_on_changes_its_share_of_them():
    tiles = torch.from_numpy(textured(n=64))[:, None]
    assert C.degrade(tiles, C.DegradeConfig(share=0.0), torch.Generator().manual_seed(0)) is tiles
    config = C.DegradeConfig.of(0.5)
    out = C.degrade(tiles, config, torch.Generator().manual_seed(0))
    again = C.degrade(tiles, config, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == tiles.shape
    changed = (out - tiles).abs().flatten(1).amax(dim=1) > 0
    assert 0.15 < changed.float().mean() < 0.6  # half the tiles chosen, each has at least one op with p 31/32
    every = C.degrade(tiles, C.DegradeConfig(share=1.0, op_probability=1.0), torch.Generator().manual_seed(1))
    assert ((every - tiles).abs().flatten(1).amax(dim=1) > 0).all()
    assert torch.allclose(every * 255, torch.round(every * 255), atol=1e-4)


def test_degrade_strength_scales_the_ranges():
    assert C.DegradeConfig.of(0.5, 0.0).noise_sigma == 0 and C.DegradeConfig.of(0.5, 0.0).gamma == 1
    wide = C.DegradeConfig.of(0.5, 2.0)
    assert wide.noise_sigma == 2 * C.DegradeConfig().noise_sigma and wide.jpeg_quality < C.DegradeConfig().jpeg_quality
    for corruption in ("gaussian_noise", "gaussian_blur", "jpeg"):  # the recipe reaches past the middle severity
        middle = C.get_corruption(corruption).level(2)
        reach = {"gaussian_noise": C.DegradeConfig().noise_sigma, "gaussian_blur": C.DegradeConfig().blur_sigma,
                 "jpeg": C.DegradeConfig().jpeg_quality}[corruption]
        assert (reach > middle) if corruption != "jpeg" else (reach < middle)
    assert not any(c.trained for c in C.CORRUPTIONS if c.name in ("shot_noise", "defocus_blur", "motion_blur",
                                                                    "downsample_lanczos"))


def test_augmentation_degrades_images_only_and_old_configs_stay_flip_only():
    images = torch.from_numpy(textured(n=16))[:, None]
    masks = torch.randint(0, 5, (16, 64, 128))
    augment = build_augmentation(AugmentConfig(hflip=False, degrade=1.0))
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out_masks, masks) and not torch.equal(out_images, images)
    recorded = {"hflip": False, "rotate_degrees": 0.0, "zoom_min_scale": 1.0, "brightness": 0.0, "contrast": 0.0}
    old = build_augmentation(AugmentConfig(**recorded))  # a config written before the degradations existed
    same, _ = old(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(same, images)
