"""A compact, configurable U-Net that emits logits; used by every member and by the baseline."""
import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ensemble.core.classes import NUM_CLASSES

from .blocks import DoubleConv, get_block, grouped_conv


@dataclass
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet`; stored in every checkpoint."""

    out_channels: int = 1
    width: int = 8
    depth: int = 3
    in_channels: int = 1
    bottleneck: str = "dilated_se"
    upsample: str = "transpose"
    dropout: float = 0.0

    def to_dict(self):
        """Plain dict (JSON and ``weights_only`` safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Rebuild from :meth:`to_dict`; unknown keys are an error naming them."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


def check_input_shape(x, channels, depth):
    """Raise ``ValueError`` unless ``x`` is (N, channels, H, W) with H, W divisible by 2**depth."""
    step = 2**depth
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected input (N, {channels}, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % step or x.shape[-1] % step:
        raise ValueError(
            f"input size {x.shape[-2]}x{x.shape[-1]} is not divisible by 2**depth = {step}; "
            f"crop or pad tiles to a multiple of {step}"
        )


class UNet(nn.Module):
    """U-Net: ``depth`` conv-BN-ReLU levels down, a bottleneck, ``depth`` levels up, a 1x1 logit head.

    Input (N, in_channels, H, W) with H and W divisible by 2**depth; output
    (N, out_channels, H, W) logits, never probabilities.
    """

    def __init__(self, config=None, **overrides):
        super().__init__()
        config = config or UNetConfig()
        if overrides:
            config = UNetConfig(**{**config.to_dict(), **overrides})
        if config.width < 1 or config.depth < 1 or config.out_channels < 1:
            raise ValueError(f"width, depth and out_channels must be >= 1, got {config}")
        self.config = config
        build_layers(self, config)

    def check_input(self, x):
        """Raise ``ValueError`` unless ``x`` is (N, in_channels, H, W) with H, W divisible by 2**depth."""
        check_input_shape(x, self.config.in_channels, self.config.depth)

    def forward(self, x):
        """Return logits (N, out_channels, H, W)."""
        self.check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(self.concat_skip(up(x), skip))
        return self.head(x)

    def concat_skip(self, upsampled, skip):
        """The decoder's input at one level: the upsampled features, then the skip connection."""
        return torch.cat([upsampled, skip], dim=1)


def build_layers(net, config, members=None, shared_input=True):
    """Give ``net`` the layers of a U-Net of ``config``: ``down``, ``pool``, ``bottleneck``, ``up``, ``merge``,
    ``head``.

    ``members=K`` builds K U-Nets side by side as grouped layers (see :mod:`members.blocks`;
    ``None``: one plain U-Net); ``shared_input`` makes them all read the same input image.
    """
    widths = [config.width * 2**i for i in range(config.depth + 1)]
    net.down = nn.ModuleList()
    channels = config.in_channels
    for i, w in enumerate(widths[:-1]):
        net.down.append(DoubleConv(channels, w, config.dropout, members=members, shared_input=i == 0 and shared_input))
        channels = w
    net.pool = nn.MaxPool2d(2)
    net.bottleneck = get_block("bottleneck", config.bottleneck)(channels, widths[-1], dropout=config.dropout,
                                                                 members=members)
    up_cls = get_block("upsample", config.upsample)
    net.up = nn.ModuleList()
    net.merge = nn.ModuleList()
    for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]):
        net.up.append(up_cls(w_in, w_out, members=members))
        net.merge.append(DoubleConv(2 * w_out, w_out, config.dropout, members=members))
    net.head = grouped_conv(widths[0], config.out_channels, 1, members)


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_config(width, depth, out_channels):
    """The U-Net config dict of a member (1 output) or the baseline (5 outputs)."""
    return UNetConfig(out_channels=out_channels, width=width, depth=depth).to_dict()


@functools.cache
def parameter_count(width, depth, out_channels):
    """Parameters of a U-Net of this width, depth and outputs (counted on shapes alone, cached)."""
    with torch.device("meta"):  # the shapes alone: no weights are allocated or initialised
        return count_parameters(UNet(UNetConfig.from_dict(model_config(width, depth, out_channels))))


def members_parameter_count(width, depth):
    """Parameters of the five members together."""
    return NUM_CLASSES * parameter_count(width, depth, 1)


def matched_baseline_width(member_width, depth):
    """The baseline width whose parameter count is closest to the five members' sum."""
    target = members_parameter_count(member_width, depth)
    widths = range(member_width, 8 * member_width + 1)
    return min(widths, key=lambda w: abs(parameter_count(w, depth, NUM_CLASSES) - target))
