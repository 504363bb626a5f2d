"""Building blocks of the compact U-Net and the registries that select them by name."""
import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_channels, out_channels, dilation=1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two conv-BN-ReLU layers, optionally followed by dropout."""

    def __init__(self, in_channels, out_channels, dropout=0.0):
        layers = [ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel recalibration: global average pool, two dense layers, sigmoid gate."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * gate[:, :, None, None]


class DilatedSEBottleneck(nn.Module):
    """Projection, parallel dilated convolutions (rates 1, 2, 4) summed, then squeeze-and-excitation."""

    def __init__(self, in_channels, out_channels, dropout=0.0, rates=(1, 2, 4)):
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels)
        self.branches = nn.ModuleList(ConvBNReLU(out_channels, out_channels, dilation=r) for r in rates)
        self.se = SqueezeExcite(out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x):
        x = self.project(x)
        x = x + sum(branch(x) for branch in self.branches)
        return self.dropout(self.se(x))


class TransposeUp(nn.ConvTranspose2d):
    """2x upsampling by a learned 2x2 transposed convolution."""

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)


class BilinearUp(nn.Sequential):
    """2x bilinear upsampling followed by a 1x1 convolution."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(in_channels, out_channels, 1))


BOTTLENECKS = {"double_conv": DoubleConv, "dilated_se": DilatedSEBottleneck}
UPSAMPLERS = {"transpose": TransposeUp, "bilinear": BilinearUp}
REGISTRIES = {"bottleneck": BOTTLENECKS, "upsample": UPSAMPLERS}


def get_block(kind, name):
    """Return the block class registered as ``name`` under ``kind`` ('bottleneck' or 'upsample')."""
    registry = REGISTRIES[kind]
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]
