"""Resampling to the training scale (``ensemble/inference/windows.py: to_training_scale``): exact area averaging
for any factor >= 1, bilinear up, batches, and the input kept when its size does not change."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ensemble.core.resample import area_weights
from ensemble.inference.windows import to_training_scale, training_size


def _image(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def _supersampled_box(image, size):
    """Brute-force area averages of ``image`` (H, W) float64 over a ``size`` grid: the image as a
    piecewise-constant function, each pixel split into size_out x size_out equal sub-pixels along each
    axis, so that every output cell (size_in sub-pixels per axis) is a whole block of sub-pixels."""
    (height, width), (rows, cols) = image.shape, size
    fine = np.repeat(np.repeat(image, rows, axis=0), cols, axis=1)
    return fine.reshape(rows, height, cols, width).mean(axis=(1, 3))


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_an_integer_factor_gives_the_block_means(k):
    h, w = 8, 16
    image = _image((h * k, w * k), seed=k)
    expected = image.numpy().reshape(h, k, w, k).mean(axis=(1, 3))
    out = to_training_scale(image, k)
    assert out.shape == (h, w) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape, scale", [((96, 192), 1.5), ((160, 320), 2.5), ((101, 163), 2.5), ((200, 77), 1.37)])
def test_a_non_integer_factor_keeps_the_mean_and_constants(shape, scale):
    image = _image(shape, seed=1)
    out = to_training_scale(image, scale)
    assert tuple(out.shape) == training_size(shape, scale)
    assert abs(float(out.double().mean()) - float(image.double().mean())) < 1e-5
    constant = to_training_scale(torch.full(shape, 0.37), scale)
    np.testing.assert_allclose(constant.numpy(), 0.37, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape, scale", [((12, 18), 1.5), ((13, 7), 2.5), ((30, 45), 2.5), ((23, 40), 1.37)])
def test_every_output_pixel_is_the_mean_of_the_area_it_covers(shape, scale):
    """Against brute force: the input integrated over each output cell by supersampling, exact for any sizes
    (the cells end on sub-pixel borders), the rounded sizes (13 rows at 2.5 -> 5: 2.6 rows a cell) included."""
    image = _image(shape, seed=2)
    size = training_size(shape, scale)
    expected = _supersampled_box(image.double().numpy(), size)
    np.testing.assert_allclose(to_training_scale(image, scale).numpy(), expected, atol=1e-6, rtol=0)


def test_the_weights_cover_every_input_pixel_alike():
    """Each input pixel gives out / in of its value in all (columns sum to the same share), so rounding of the
    output size never drops an edge pixel; a 1.5 cell takes 1, then 1/2 of the next pixel."""
    for size_in, size_out in ((192, 128), (193, 129), (101, 40), (7, 3)):
        weights = area_weights(size_in, size_out)
        np.testing.assert_allclose(weights.sum(dim=1).numpy(), 1, atol=1e-12)
        np.testing.assert_allclose(weights.sum(dim=0).numpy(), size_out / size_in, atol=1e-12)
    np.testing.assert_allclose(area_weights(3, 2).numpy(), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-12)


def test_a_batch_equals_each_image_alone():
    images = _image((5, 96, 192), seed=3)
    alone = torch.stack([to_training_scale(image, 1.5) for image in images])
    assert alone.shape == (5, 64, 128)
    assert torch.equal(to_training_scale(images, 1.5), alone)
    assert torch.equal(to_training_scale(images[:, None], 1.5), alone[:, None])


def test_scale_1_and_an_unchanged_size_return_the_input_itself():
    image = _image((64, 128))
    assert to_training_scale(image, 1) is image and to_training_scale(image, 1.001) is image
    batch = image[None, None]
    assert to_training_scale(batch, 1.0) is batch


def test_one_axis_changed_the_other_kept():
    """1000 columns at 1.001 become 999, the 10 rows stay: the columns are box-averaged, the rows untouched."""
    image = _image((10, 1000), seed=4)
    out = to_training_scale(image, 1.001)
    assert out.shape == (10, 999)
    np.testing.assert_allclose(out.numpy(), _supersampled_box(image.double().numpy(), (10, 999)), atol=1e-6)


def test_upsampling_is_bilinear():
    """As ``F.interpolate``, to the float32 rounding of its source coordinates."""
    image = _image((2, 1, 20, 30), seed=5)
    out = to_training_scale(image, 0.4)
    expected = F.interpolate(image, size=(50, 75), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def test_an_integer_image_is_averaged_as_float():
    image = torch.arange(16, dtype=torch.uint8).reshape(4, 4)
    out = to_training_scale(image, 2)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [[2.5, 4.5], [10.5, 12.5]], atol=1e-6)
