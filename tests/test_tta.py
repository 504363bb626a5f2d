"""Flip test-time augmentation: the mirrored prediction is mirrored back before averaging.

``logits_batches(..., tta="flip")`` must give ``(f(x) + flip(f(flip(x)))) / 2``: the plain
prediction when ``f`` commutes with the mirror, and not ``(f(x) + f(flip(x))) / 2`` (the
mirrored logits left unmirrored) when it does not.
"""
import numpy as np
import pytest
import torch

from ensemble.inference import all_logits, logits_batches
from ensemble.inference.loading import members_forward
from members.unet import UNet

H, W = 64, 128
MODEL = dict(width=4, depth=3, in_channels=1, bottleneck="dilated_se", upsample="transpose", dropout=0.0)


def _images(n=5, seed=0):
    return np.random.default_rng(seed).random((n, H, W), dtype=np.float32)


def _run(forward, images, tta, batch_size=2):
    return all_logits(logits_batches(forward, images, batch_size=batch_size, tta=tta), len(images))


def _mirror(t):
    return t.flip(-1)


def _asymmetric(x):
    """Logits that depend on the column: a left-to-right ramp and a one-sided neighbour difference."""
    ramp = torch.linspace(-1.0, 2.0, x.shape[-1])
    shifted = torch.nn.functional.pad(x, (1, 0))[..., :-1]  # left neighbour
    return torch.cat([x * ramp, x - shifted, x**2], dim=1)


def _unet(out_channels, seed):
    torch.manual_seed(seed)
    return UNet(out_channels=out_channels, **MODEL).eval()


def test_flip_on_equivariant_forward_is_the_plain_prediction():
    images = _images()
    pixelwise = lambda x: torch.cat([2 * x - 1, x**2, torch.sin(3 * x)], dim=1)  # noqa: E731
    np.testing.assert_allclose(_run(pixelwise, images, "flip"), _run(pixelwise, images, "none"), rtol=0, atol=1e-6)
    net = _unet(5, seed=1)
    symmetrised = lambda x: (net(x) + _mirror(net(_mirror(x)))) / 2  # noqa: E731  commutes with the mirror
    np.testing.assert_allclose(_run(symmetrised, images, "flip"), _run(symmetrised, images, "none"),
                               rtol=0, atol=1e-5)


def test_flip_of_mirror_symmetric_input_on_equivariant_net_is_plain():
    half = _images(3)[..., : W // 2]
    images = np.ascontiguousarray(np.concatenate([half, half[..., ::-1]], axis=-1))  # x == flip(x)
    net = _unet(5, seed=2)
    symmetrised = lambda x: (net(x) + _mirror(net(_mirror(x)))) / 2  # noqa: E731
    plain = _run(symmetrised, images, "none")
    np.testing.assert_allclose(plain, plain[..., ::-1], rtol=0, atol=1e-5)  # the prediction is symmetric too
    np.testing.assert_allclose(_run(symmetrised, images, "flip"), plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["function", "unet"])
def test_flip_unmirrors_before_averaging(kind):
    images = _images()
    forward = _asymmetric if kind == "function" else _unet(5, seed=3)
    x = torch.from_numpy(images)[:, None]
    with torch.no_grad():
        plain, mirrored = forward(x), forward(_mirror(x))
    right = ((plain + _mirror(mirrored)) / 2).numpy()
    wrong = ((plain + mirrored) / 2).numpy()
    got = _run(forward, images, "flip")
    np.testing.assert_allclose(got, right, rtol=0, atol=1e-5)
    error = max(np.abs(got - right).max(), 1e-6)
    assert np.abs(got - wrong).max() > max(1e-3, 50 * error)  # far from the unmirrored average
    assert np.abs(got - plain.numpy()).max() > max(1e-3, 50 * error)  # the forward is asymmetric


def test_flip_through_stacked_members_and_baseline():
    images = _images(4)
    x = torch.from_numpy(images)[:, None]
    members = [_unet(1, seed=10 + k) for k in range(5)]
    with torch.no_grad():
        plain = torch.cat([m(x) for m in members], 1)
        right = (plain + _mirror(torch.cat([m(_mirror(x)) for m in members], 1))) / 2
    for stack in (True, False):
        got = all_logits(logits_batches(members_forward(members, stack), images, batch_size=3, tta="flip"), len(images))
        np.testing.assert_allclose(got, right.numpy(), rtol=0, atol=1e-4)
    baseline = _unet(5, seed=20)
    with torch.no_grad():
        right = (baseline(x) + _mirror(baseline(_mirror(x)))) / 2
    got = all_logits(logits_batches(baseline, images, batch_size=3, tta="flip"), len(images))
    np.testing.assert_allclose(got, right.numpy(), rtol=0, atol=1e-5)


def test_unknown_tta_refused():
    with pytest.raises(ValueError, match="flip"):
        _run(_asymmetric, _images(1), "rotate")
