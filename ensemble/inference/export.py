"""The whole ensemble (stacked members, other networks a fuser reads, fuser, softmax), or the baseline, as one program.

Two formats, both mapping images (N, 1, H, W) float in 0-1 to class probabilities (N, 5, H, W),
for any N:

* ``.pt2``: a ``torch.export`` program; needs only ``torch``: ``torch.export.load(path).module()(images)``;
* ``.onnx``: one ONNX graph (input ``images``, output ``outputs``); needs only onnxruntime:
  ``onnxruntime.InferenceSession(path).run(None, {"images": images})[0]``.
"""
import contextlib
import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from members.stacked import StackedUNet

from ..core.augment import mirror_averaged_logits
from ..core.classes import NUM_CLASSES
from ..core.fileio import write_bytes_atomic


class EnsemblePipeline(nn.Module):
    """A :class:`~members.stacked.StackedUNet` of the five members, a fuser module and a softmax.

    The stacked members are held in their inference form (a
    :class:`~members.stacked.FoldedStack`, batch norm folded). ``fuser_module`` maps member
    logits (N, 5, H, W) to fused class logits, as returned by a fitted fuser's ``module()``.
    Input (N, 1, H, W) float in 0-1; output the fused class probabilities (N, 5, H, W),
    summing to 1 over dim 1. ``flip``: the member logits averaged with those of the mirrored images.
    """

    def __init__(self, stacked, fuser_module, flip=False):
        super().__init__()
        if not isinstance(stacked, StackedUNet):
            raise ValueError(f"expected a StackedUNet, got {type(stacked).__name__}")
        channels = stacked.num_members * stacked.config.out_channels
        if channels != NUM_CLASSES:
            raise ValueError(f"the stacked members emit {channels} logit channels; the fuser needs {NUM_CLASSES}")
        self.stacked = stacked.for_inference()
        self.fuser = fuser_module
        self.flip = bool(flip)

    def forward(self, images):
        """Class probabilities (N, 5, H, W) of images (N, 1, H, W)."""
        member_logits = mirror_averaged_logits(self.stacked, images) if self.flip else self.stacked(images)
        return torch.softmax(self.fuser(member_logits), dim=1)


def export_pipeline(stacked, fuser, path, example_shape=(2, 1, 64, 128), flip=False):
    """Export stacked members + ``fuser`` + softmax with ``torch.export`` and save it to ``path`` atomically.

    ``stacked`` is a :class:`~members.stacked.StackedUNet` of the members, or any module from
    images to the fuser's input logits (the sources of a fuser that reads several networks).
    ``fuser`` is a fitted :class:`fusion.Fuser` or its ``module()``, or ``None`` when ``stacked`` is one
    multiclass network whose logits are the class logits (the baseline, the student). The program is traced
    in eval mode on a folded copy (``stacked`` is left as it is) with a random input of
    ``example_shape``; the batch dimension is dynamic, height and width are fixed to the
    example's; ``flip`` bakes in flip TTA. ``path`` must end in ``.pt2`` (the extension ``torch.export`` expects); the
    file is written beside it and moved into place with ``os.replace``. Returns ``path``.
    """
    if Path(path).suffix != ".pt2":
        raise ValueError(f"{path}: an exported program's file name must end in .pt2")
    fuser_module = None if fuser is None else fuser if isinstance(fuser, nn.Module) else fuser.module()
    if isinstance(stacked, StackedUNet):
        pipeline = EnsemblePipeline(stacked, copy.deepcopy(fuser_module), flip).eval()  # copies the members
    else:  # several networks side by side (members and multiclass nets) for a fuser that reads them all
        pipeline = ProbabilitiesPipeline(copy.deepcopy(stacked), copy.deepcopy(fuser_module), flip).eval()
    generator = torch.Generator().manual_seed(0)  # leaves the global RNG alone
    example = torch.rand(example_shape, generator=generator).to(next(stacked.parameters()).device)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(pipeline, (example,), dynamic_shapes=({0: batch},))
    # Serialised in memory first: torch's archive writer aborts the process (a C++ exception in its
    # destructor) when the file it writes to fails mid-write, e.g. on a full disk; a plain write does not.
    buffer = io.BytesIO()
    with _channels_last_weights_ok():
        torch.export.save(program, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


class ProbabilitiesPipeline(nn.Module):
    """Networks -> optional fuser -> softmax: class probabilities (N, 5, H, W) of images (N, 1, H, W).

    ``networks`` maps images to member logits (then ``fuser_module`` fuses them) or, for the
    baseline, directly to class logits (``fuser_module=None``). ``flip``: the networks' logits averaged
    with those of the mirrored images.
    """

    def __init__(self, networks, fuser_module=None, flip=False):
        super().__init__()
        self.networks = networks
        self.fuser = fuser_module if fuser_module is not None else nn.Identity()
        self.flip = bool(flip)

    def forward(self, images):
        """Class probabilities (N, 5, H, W)."""
        logits = mirror_averaged_logits(self.networks, images) if self.flip else self.networks(images)
        return torch.softmax(self.fuser(logits), dim=1)


def export_onnx_pipeline(networks, fuser, path, example_shape=(2, 1, 64, 128), flip=False):
    """Write networks (+ ``fuser``, a fitted :class:`fusion.Fuser`, its module, or ``None``) + softmax as one
    ONNX graph to ``path`` (atomically), batch dimension dynamic; ``flip`` bakes in flip TTA. Returns ``path``."""
    from .engines import export_onnx

    if Path(path).suffix != ".onnx":
        raise ValueError(f"{path}: an ONNX graph's file name must end in .onnx")
    fuser_module = None if fuser is None else fuser if isinstance(fuser, nn.Module) else fuser.module()
    pipeline = ProbabilitiesPipeline(copy.deepcopy(networks), copy.deepcopy(fuser_module), flip).eval()
    example = torch.rand(example_shape, generator=torch.Generator().manual_seed(0))
    export_onnx(pipeline, example, path)
    return path


def load_exported(path):
    """Load a program written by :func:`export_pipeline`: a module mapping images to probabilities."""
    with _channels_last_weights_ok():
        return torch.export.load(path).module()


@contextlib.contextmanager
def _channels_last_weights_ok():
    """Silence torch's warning about the folded members' channels-last weights.

    torch warns that such layouts "may cause issues" only for weights on another device;
    the program's weights are on the CPU and the test reproduces its outputs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        yield
