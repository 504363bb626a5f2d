"""K identically configured U-Nets run as one network of grouped layers.

:class:`StackedUNet` is built by the same code as :class:`~members.unet.UNet`
(:func:`~members.unet.build_layers` with ``members=K``: every block of :mod:`members.blocks`
takes a member count), so the two module trees agree name by name; every layer is widened K
times and split into K groups, one per member:

* ``Conv2d`` / ``ConvTranspose2d``: ``groups=K``, weights and biases concatenated along
  dim 0 in member order (for ``ConvTranspose2d`` dim 0 is the input channel, so the
  concatenation again puts member k's block in group k). The first convolution reads the
  input shared by all members, so it keeps ``groups=1`` and only multiplies its outputs;
* ``BatchNorm2d``: one layer over K*C channels, i.e. per-member statistics; its
  ``num_batches_tracked`` holds one count per member (see :class:`~members.blocks.GroupedBatchNorm2d`);
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

from .unet import UNet, UNetConfig, build_layers, check_input_shape


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
        build_layers(self, config, num_members, shared_input=not separate_inputs)

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
