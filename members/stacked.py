"""K identically configured U-Nets run as one network of grouped layers.

:class:`StackedUNet` mirrors the module tree of :class:`~members.unet.UNet` layer for
layer, with every layer widened K times and split into K groups, one per member:

* ``Conv2d`` / ``ConvTranspose2d``: ``groups=K``, weights and biases concatenated along
  dim 0 in member order (for ``ConvTranspose2d`` dim 0 is the input channel, so the
  concatenation again puts member k's block in group k). The first convolution reads the
  input shared by all members, so it keeps ``groups=1`` and only multiplies its outputs;
* ``BatchNorm2d``: one layer over K*C channels, i.e. per-member statistics; its
  ``num_batches_tracked`` holds one count per member (see :class:`GroupedBatchNorm2d`);
* the squeeze-and-excitation ``Linear`` layers: grouped 1x1 convolutions, so each member's
  gate sees only its own channels;
* the skip concatenation: per member, ``[member k's upsampled, member k's skip]``.

With ``separate_inputs=True`` each member reads its own input channels (N, K*C_in, H, W)
instead of sharing one image, so K members can train stacked on K different batches;
the first convolution is then grouped too, and its weight keeps the same shape.

Because the trees agree name by name, member k's state dict is the k-th dim-0 block of
each stacked tensor; :meth:`StackedUNet.from_members` and :meth:`StackedUNet.split`
convert between the two exactly.
"""
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .unet import UNet, UNetConfig, check_input_shape


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` over the K*C channels of K members; ``num_batches_tracked`` has shape (K,).

    Batch norm normalises each channel on its own, so the per-member statistics need no
    change; only the batch counter is kept per member so that :meth:`StackedUNet.split`
    gives every member back its own count.
    """

    def __init__(self, channels, members):
        super().__init__(channels * members)
        self.num_batches_tracked = torch.zeros(members, dtype=torch.long)


def _conv_bn_relu(in_channels, out_channels, members, dilation=1, shared_input=False):
    """Grouped counterpart of :class:`~members.blocks.ConvBNReLU` (same child names)."""
    in_total = in_channels if shared_input else in_channels * members
    return nn.Sequential(
        nn.Conv2d(in_total, out_channels * members, 3, padding=dilation, dilation=dilation, bias=False,
                  groups=1 if shared_input else members),
        GroupedBatchNorm2d(out_channels, members),
        nn.ReLU(inplace=True),
    )


def _double_conv(in_channels, out_channels, members, dropout=0.0, shared_input=False):
    """Grouped counterpart of :class:`~members.blocks.DoubleConv` (same child names)."""
    layers = [
        _conv_bn_relu(in_channels, out_channels, members, shared_input=shared_input),
        _conv_bn_relu(out_channels, out_channels, members),
    ]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class _GroupedSqueezeExcite(nn.Module):
    """Grouped :class:`~members.blocks.SqueezeExcite`: the dense layers are grouped 1x1 convolutions."""

    def __init__(self, channels, members, reduction=4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels * members, hidden * members, 1, groups=members),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden * members, channels * members, 1, groups=members),
        )

    def forward(self, x):
        """Scale every channel by its member's gate."""
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class _GroupedDilatedSEBottleneck(nn.Module):
    """Grouped :class:`~members.blocks.DilatedSEBottleneck` (same child names)."""

    def __init__(self, in_channels, out_channels, members, dropout=0.0, rates=(1, 2, 4)):
        super().__init__()
        self.project = _conv_bn_relu(in_channels, out_channels, members)
        self.branches = nn.ModuleList(_conv_bn_relu(out_channels, out_channels, members, dilation=r) for r in rates)
        self.se = _GroupedSqueezeExcite(out_channels, members)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x):
        """Projection plus the summed dilated branches, then squeeze-and-excitation and dropout."""
        x = self.project(x)
        x = x + sum(branch(x) for branch in self.branches)
        return self.dropout(self.se(x))


def _transpose_up(in_channels, out_channels, members):
    """Grouped :class:`~members.blocks.TransposeUp`."""
    return nn.ConvTranspose2d(in_channels * members, out_channels * members, 2, stride=2, groups=members)


def _bilinear_up(in_channels, out_channels, members):
    """Grouped :class:`~members.blocks.BilinearUp` (same child names)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels * members, out_channels * members, 1, groups=members),
    )


_BOTTLENECKS = {"double_conv": _double_conv, "dilated_se": _GroupedDilatedSEBottleneck}
_UPSAMPLERS = {"transpose": _transpose_up, "bilinear": _bilinear_up}


def _grouped_block(registry, kind, name):
    if name not in registry:
        raise ValueError(f"no stacked version of {kind} {name!r}; supported: {', '.join(sorted(registry))}")
    return registry[name]


def common_config(models):
    """The one :class:`~members.unet.UNetConfig` shared by U-Net ``models``.

    ``ValueError`` if there are none, one is not a U-Net, or their configs differ (naming the fields).
    """
    models = list(models)
    if not models:
        raise ValueError("cannot stack zero members")
    for i, model in enumerate(models):
        if not isinstance(model, UNet):
            raise ValueError(f"member {i} is a {type(model).__name__}, not a UNet")
    configs = [m.config.to_dict() for m in models]
    differing = [key for key in configs[0] if any(c[key] != configs[0][key] for c in configs)]
    if differing:
        details = "; ".join(f"{key}: {[c[key] for c in configs]}" for key in differing)
        raise ValueError(f"members must share one U-Net config to be stacked; they differ in {details}")
    return UNetConfig.from_dict(configs[0])


def block_shapes(stacked):
    """``{state key: shape of one member's block}`` of a stacked network's state dict (dim 0 split K ways)."""
    k = stacked.num_members
    return {key: (t.shape[0] // k, *t.shape[1:]) for key, t in stacked.state_dict().items()}


def stack_member_states(shapes, member_states):
    """The stacked state: each member's tensor reshaped to its block, concatenated along dim 0 in member order.

    Differentiable: gradients of the result flow back to the members' own tensors.
    """
    return {key: torch.cat([s[key].reshape(shape) for s in member_states]) for key, shape in shapes.items()}


class StackedUNet(nn.Module):
    """``num_members`` U-Nets of one :class:`~members.unet.UNetConfig` run as a single grouped network.

    Input (N, in_channels, H, W), shared by all members (or, with ``separate_inputs``,
    (N, num_members * in_channels, H, W), member k reading its own block); output
    (N, num_members * out_channels, H, W): the members' logits side by side in member order
    (for the five one-vs-rest members, (N, 5, H, W) in class order). Built fresh it is
    randomly initialised; use :meth:`from_members` to stack trained members.
    """

    def __init__(self, config, num_members, separate_inputs=False):
        super().__init__()
        if num_members < 1 or config.width < 1 or config.depth < 1 or config.out_channels < 1:
            raise ValueError(f"num_members, width, depth and out_channels must be >= 1, got {num_members}, {config}")
        self.config = config
        self.num_members = num_members
        self.separate_inputs = separate_inputs
        k = num_members
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        channels = config.in_channels
        for i, w in enumerate(widths[:-1]):
            self.down.append(_double_conv(channels, w, k, config.dropout, shared_input=i == 0 and not separate_inputs))
            channels = w
        self.pool = nn.MaxPool2d(2)
        bottleneck = _grouped_block(_BOTTLENECKS, "bottleneck", config.bottleneck)
        self.bottleneck = bottleneck(channels, widths[-1], k, dropout=config.dropout)
        up = _grouped_block(_UPSAMPLERS, "upsample", config.upsample)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(up(w_in, w_out, k))
            self.merge.append(_double_conv(2 * w_out, w_out, k, config.dropout))
        self.head = nn.Conv2d(widths[0] * k, config.out_channels * k, 1, groups=k)

    def check_input(self, x):
        """Raise ``ValueError`` unless ``x`` has the input channels and a size divisible by 2**depth."""
        members = self.num_members if self.separate_inputs else 1
        check_input_shape(x, self.config.in_channels * members, self.config.depth)

    #: Same computation as :meth:`UNet.forward`; only the skip concatenation differs (per member).
    forward = UNet.forward

    def concat_skip(self, upsampled, skip):
        """Channel layout ``[up_0, skip_0, up_1, skip_1, ...]``: member k's input to its merge block."""
        k = self.num_members
        return torch.cat([upsampled.unflatten(1, (k, -1)), skip.unflatten(1, (k, -1))], dim=2).flatten(1, 2)

    @classmethod
    def from_members(cls, models):
        """Stack trained :class:`~members.unet.UNet` ``models`` (same config) into one network.

        Weights and buffers are copied exactly; the result is on the first member's device
        and in train mode if any member is. ``ValueError`` naming the config fields that
        differ between members.
        """
        models = list(models)
        with torch.device("meta"):  # structure only: no random init, no memory
            stacked = cls(common_config(models), len(models))
        device = next(models[0].parameters()).device
        member_states = [{key: t.to(device) for key, t in m.state_dict().items()} for m in models]
        stacked.load_state_dict(stack_member_states(block_shapes(stacked), member_states), assign=True)
        return stacked.train(any(m.training for m in models))

    def for_inference(self):
        """An eval-mode copy tuned for CPU inference: :class:`FoldedStack` (same outputs within 1e-5)."""
        return FoldedStack(self)

    def split(self):
        """The members as K separate :class:`~members.unet.UNet` models (exact copies, same device and mode)."""
        stacked_state = self.state_dict()
        members = []
        for k in range(self.num_members):
            with torch.device("meta"):  # structure only: no random init, no memory
                member = UNet(UNetConfig.from_dict(self.config.to_dict()))
            state = {
                key: stacked_state[key].detach().chunk(self.num_members)[k].reshape(target.shape).clone()
                for key, target in member.state_dict().items()
            }
            member.load_state_dict(state, assign=True)
            members.append(member.train(self.training))
        return members


def fold_batch_norm(module):
    """Fold every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` in a ``Sequential`` into that conv (in place).

    Batch norm in eval mode is a per-channel affine map, so the conv's weights and bias can
    absorb it: one pass over the activations less, the same result up to float rounding.
    """
    for block in list(module.modules()):
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return module


class FoldedStack(nn.Module):
    """Inference form of a :class:`StackedUNet`: batch norm folded into the convs, channels-last memory.

    Measured on 2 CPU cores (``scripts/bench.py``), the grouped convolutions of the plain
    stacked network are slower than the members one by one at large batches; folding batch
    norm and running in channels-last layout (which oneDNN's grouped kernels prefer) makes
    the stacked pass the faster one. Takes and returns the same tensors as the stacked network.
    """

    def __init__(self, stacked):
        super().__init__()
        self.net = fold_batch_norm(copy.deepcopy(stacked).eval()).to(memory_format=torch.channels_last)
        self.num_members, self.config = stacked.num_members, stacked.config

    def forward(self, x):
        """Member logits (N, K*out_channels, H, W), contiguous."""
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()
