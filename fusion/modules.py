"""Export-friendly fusion modules: fitted parameters are buffers, forward is elementwise or conv2d."""
import torch
import torch.nn.functional as F
from torch import nn


class ChannelAffine(nn.Module):
    """Per-channel affine map: ``fused_logits[:, k] = scales[k] * member_logits[:, k] + biases[k]``."""

    def __init__(self, scales, biases):
        super().__init__()
        self.register_buffer("scales", torch.as_tensor(scales, dtype=torch.float32).reshape(1, -1, 1, 1).clone())
        self.register_buffer("biases", torch.as_tensor(biases, dtype=torch.float32).reshape(1, -1, 1, 1).clone())

    def forward(self, member_logits):
        """Map member logits (N, C, H, W) to fused class logits (N, C, H, W)."""
        return torch.addcmul(self.biases, member_logits, self.scales)


class FusionConv(nn.Module):
    """A fixed ``conv2d`` over the member logits with 'same' zero padding (odd kernel size).

    Unlike ``nn.Conv2d`` its construction draws no random numbers, so building it does not
    disturb the global torch RNG. A 1x1 kernel runs as a matrix product over the flattened
    pixels: the same map, many times faster on the CPU than ``conv2d`` with 5 channels
    (docs/performance.md), and its output stays plain contiguous, so what follows (the class-0 mask, the argmax) is
    not slowed either.
    """

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32).clone())
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).clone())
        self.padding = self.weight.shape[-1] // 2

    def forward(self, member_logits):
        """Map member logits (N, C, H, W) to fused class logits (N, C_out, H, W)."""
        if self.padding:
            return F.conv2d(member_logits, self.weight, self.bias, padding=self.padding)
        n, _, h, w = member_logits.shape
        flat = torch.matmul(self.weight.flatten(1), member_logits.reshape(n, -1, h * w))
        return (flat + self.bias.reshape(1, -1, 1)).reshape(n, -1, h, w)


class FiniteLogits(nn.Module):
    """Logits with every non-finite value (a class a network never predicts: -inf) replaced by 0."""

    def forward(self, logits):
        """``logits`` (N, C, H, W) with -inf, inf and NaN set to 0."""
        return torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))


class SoftVote(nn.Module):
    """Two sources' class logits soft-voted: ``log(w * softmax(first(a)) + (1 - w) * softmax(b)) + offsets``.

    The input is the two sources' logits concatenated (N, 10, H, W): ``a`` the first five
    channels, passed through ``first`` (a fuser module, or ``nn.Identity``), ``b`` the last five.
    A class both give probability 0 (class 0 under ``competition``) gets logit -inf.
    """

    def __init__(self, first, weight, offsets):
        super().__init__()
        self.first = first
        self.weight = float(weight)
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32).reshape(1, -1, 1, 1).clone())

    def forward(self, input_logits):
        """Fused class logits (N, 5, H, W)."""
        classes = self.offsets.shape[1]
        first = torch.softmax(self.first(input_logits[:, :classes]), dim=1)
        second = torch.softmax(input_logits[:, classes:], dim=1)
        return torch.log(self.weight * first + (1.0 - self.weight) * second) + self.offsets
