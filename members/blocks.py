"""Building blocks of the compact U-Net and the registries that select them by name.

Every block takes ``members`` (default ``None``): with ``members=K`` it is K copies of itself run
as one layer of grouped convolutions, channels laid out member by member (member k owns the k-th
block of every channel dimension). A plain :class:`~members.unet.UNet` uses ``None``, a
:class:`~members.stacked.StackedUNet` ``members=K`` (K >= 1); one definition serves both, so the
stacked network cannot drift from the single one. With ``None`` the modules (and checkpoint keys
and shapes) are those of an ordinary U-Net; the grouped form keeps per-member batch counters and
grouped 1x1 convolutions for the squeeze-and-excitation layers even for K = 1.

``shared_input=True`` (first layer only) makes the K copies read the same input channels.
"""
import torch
from torch import nn


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` over the K*C channels of K members; ``num_batches_tracked`` has shape (K,).

    Batch norm normalises each channel on its own, so the per-member statistics need no
    change; only the batch counter is kept per member so that :meth:`StackedUNet.split`
    gives every member back its own count.
    """

    def __init__(self, channels, members):
        super().__init__(channels * members)
        self.num_batches_tracked = torch.zeros(members, dtype=torch.long)


def batch_norm(channels, members=None):
    """``BatchNorm2d`` of one network (``members=None``), or :class:`GroupedBatchNorm2d` of ``members`` networks."""
    return nn.BatchNorm2d(channels) if members is None else GroupedBatchNorm2d(channels, members)


def grouped_conv(in_channels, out_channels, kernel_size, members=None, shared_input=False, **options):
    """``Conv2d`` of ``members`` networks side by side (``groups=members``); with ``shared_input`` all read one
    input."""
    k = members or 1
    in_total = in_channels if shared_input else in_channels * k
    return nn.Conv2d(in_total, out_channels * k, kernel_size, groups=1 if shared_input else k, **options)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_channels, out_channels, dilation=1, members=None, shared_input=False):
        super().__init__(
            grouped_conv(in_channels, out_channels, 3, members, shared_input, padding=dilation, dilation=dilation,
                         bias=False),
            batch_norm(out_channels, members),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two conv-BN-ReLU layers, optionally followed by dropout."""

    def __init__(self, in_channels, out_channels, dropout=0.0, members=None, shared_input=False):
        layers = [ConvBNReLU(in_channels, out_channels, members=members, shared_input=shared_input),
                  ConvBNReLU(out_channels, out_channels, members=members)]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel recalibration: global average pool, two dense layers, sigmoid gate.

    One network keeps ``nn.Linear`` layers (the checkpoint format); the grouped form runs them as
    grouped 1x1 convolutions, so each member's gate sees only its own channels.
    """

    def __init__(self, channels, reduction=4, members=None):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.grouped = members is not None
        if self.grouped:
            first, second = grouped_conv(channels, hidden, 1, members), grouped_conv(hidden, channels, 1, members)
        else:
            first, second = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.fc = nn.Sequential(first, nn.ReLU(inplace=True), second)

    def forward(self, x):
        """Scale every channel by its gate."""
        if self.grouped:
            return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * gate[:, :, None, None]


class DilatedSEBottleneck(nn.Module):
    """Projection, parallel dilated convolutions (rates 1, 2, 4) summed, then squeeze-and-excitation."""

    def __init__(self, in_channels, out_channels, dropout=0.0, rates=(1, 2, 4), members=None):
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels, members=members)
        self.branches = nn.ModuleList(ConvBNReLU(out_channels, out_channels, dilation=r, members=members)
                                      for r in rates)
        self.se = SqueezeExcite(out_channels, members=members)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x):
        x = self.project(x)
        x = x + sum(branch(x) for branch in self.branches)
        return self.dropout(self.se(x))


class TransposeUp(nn.ConvTranspose2d):
    """2x upsampling by a learned 2x2 transposed convolution."""

    def __init__(self, in_channels, out_channels, members=None):
        k = members or 1
        super().__init__(in_channels * k, out_channels * k, kernel_size=2, stride=2, groups=k)


class BilinearUp(nn.Sequential):
    """2x bilinear upsampling followed by a 1x1 convolution."""

    def __init__(self, in_channels, out_channels, members=None):
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         grouped_conv(in_channels, out_channels, 1, members))


BOTTLENECKS = {"double_conv": DoubleConv, "dilated_se": DilatedSEBottleneck}
UPSAMPLERS = {"transpose": TransposeUp, "bilinear": BilinearUp}
REGISTRIES = {"bottleneck": BOTTLENECKS, "upsample": UPSAMPLERS}


def get_block(kind, name):
    """Return the block class registered as ``name`` under ``kind`` ('bottleneck' or 'upsample')."""
    registry = REGISTRIES[kind]
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]
