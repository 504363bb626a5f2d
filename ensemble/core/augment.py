"""Paired image/mask augmentation with ``torchvision.transforms.v2``.

The image is a ``tv_tensors.Image`` and the mask a ``tv_tensors.Mask``, so every
geometric transform draws one set of parameters for both, resamples the mask with
nearest neighbour, and fills padded areas of the mask with background (0).
"""
from dataclasses import asdict, dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


@dataclass
class AugmentConfig:
    """What to augment. Zero or ``None`` switches a transform off."""

    hflip: bool = True
    rotate_degrees: float = 10.0
    zoom_min_scale: float = 0.8  # random resized crop keeps at least this share of the area
    brightness: float = 0.0
    contrast: float = 0.0

    def to_dict(self):
        """Plain dict for JSON configs."""
        return asdict(self)


def build_augmentation(config=None, size=None):
    """Return ``f(image, mask) -> (image, mask)`` for an image (1, H, W) float and a mask (H, W).

    ``size``: output (H, W) of the zoom crop; defaults to the input size at call time.
    """
    config = config or AugmentConfig()
    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: 0}
    steps = []
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if config.rotate_degrees:
        steps.append(v2.RandomRotation(degrees=config.rotate_degrees, fill=fill))
    if config.brightness or config.contrast:
        steps.append(v2.ColorJitter(brightness=config.brightness or None, contrast=config.contrast or None))
    pipeline = v2.Compose(steps)

    def augment(image, mask):
        img = tv_tensors.Image(image)
        msk = tv_tensors.Mask(mask)
        if config.zoom_min_scale and config.zoom_min_scale < 1.0:
            out_size = size or tuple(img.shape[-2:])
            ratio = out_size[1] / out_size[0]
            crop = v2.RandomResizedCrop(
                out_size, scale=(config.zoom_min_scale, 1.0), ratio=(ratio * 0.9, ratio / 0.9), antialias=True
            )
            img, msk = crop(img, msk)
        img, msk = pipeline(img, msk)
        return torch.clamp(img.as_subclass(torch.Tensor), 0.0, 1.0), msk.as_subclass(torch.Tensor)

    return augment
