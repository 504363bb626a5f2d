"""Train several one-vs-rest members as one grouped network in one process (``ensemble train --stacked``).

Each member keeps its own parameters, optimiser, scheduler, loss, sampler and early
stopping (a :class:`~members.training.NetworkTrainer` each); only the forward and backward
passes run stacked. Every step, :class:`MemberStack` concatenates the members' parameters
into the weights of a :class:`~members.stacked.StackedUNet` with separate inputs, and the
members' own batches go in side by side (channels-last, as each member trains alone). The
stacked network is block-diagonal, so a member's gradient comes from its own loss alone; a
member that stops early leaves the stack and its parameters no longer change. Checkpoints and metrics are the
same files as independent training writes, so either way can resume the other.
"""
import time

import numpy as np
import torch
from torch import nn

from ensemble.core.logs import line_logger

from .stacked import StackedUNet, block_shapes, common_config, stack_member_states
from .training import NetworkTrainer, finished_metrics
from .validation import validation_logits

_log_line = line_logger(__name__)  # where progress lines go when the caller gives no log


class MemberStack(nn.Module):
    """K member U-Nets run as one grouped network while each keeps its own parameters.

    Input (N, C, H, W) shared by all members, or (N, K*C, H, W) with member k reading
    block k; output (N, K*out_channels, H, W) logits in member order. Gradients flow back
    to each member's own parameters; in train mode the batch-norm running statistics
    computed by the stacked pass are copied back into each member.
    """

    def __init__(self, models):
        super().__init__()
        self.members = nn.ModuleList(models)
        config = common_config(models)
        k = len(models)
        with torch.device("meta"):  # structure only: the members' tensors are swapped in at every call
            self._templates = {False: StackedUNet(config, k), True: StackedUNet(config, k, separate_inputs=True)}
        self._block_shapes = block_shapes(self._templates[False])
        self._buffer_keys = [name for name, _ in self._templates[False].named_buffers()]
        self._in_channels = config.in_channels

    def forward(self, x):
        """Logits (N, K*out_channels, H, W) of the members for shared or per-member inputs."""
        k = len(self.members)
        template = self._templates[k > 1 and x.shape[1] == k * self._in_channels]
        template.train(self.training)
        states = [m.state_dict(keep_vars=True) for m in self.members]
        tensors = stack_member_states(self._block_shapes, states)
        logits = torch.func.functional_call(template, tensors, (x,))
        if self.training:
            with torch.no_grad():
                for key in self._buffer_keys:
                    for s, block in zip(states, tensors[key].chunk(k)):
                        s[key].copy_(block.reshape(s[key].shape))
        return logits


def check_stackable(trainers):
    """``ValueError`` unless the trainers are members that can share stacked steps, naming what differs."""
    if any(not t.config.is_member for t in trainers):
        raise ValueError("only one-vs-rest members can be trained stacked, not the multiclass baseline")
    common_config([t.model for t in trainers])
    for field in ("batch_size", "samples_per_epoch"):
        values = {getattr(t.config, field) for t in trainers}
        if len(values) > 1:
            raise ValueError(f"members trained stacked need one {field}; got {sorted(values)}")
    if len({bool(t.config.ema_decay) for t in trainers}) > 1:
        raise ValueError("members trained stacked need ema_decay on for all of them or for none")
    first = trainers[0].val_positions
    if any(not np.array_equal(t.val_positions, first) for t in trainers):
        raise ValueError("members trained stacked need the same validation tiles (val_tiles and seed)")


def stacked_epoch(trainers):
    """Train ``trainers`` (all at the same epoch) for one epoch as one stacked network."""
    started = time.perf_counter()
    stack = MemberStack([t.model for t in trainers]).train()
    totals, count = np.zeros(len(trainers)), 0
    for batches in zip(*(t.epoch_batches() for t in trainers)):
        images = torch.cat([x for x, _, _ in batches], dim=1)  # member k reads channel block k
        member_logits = stack(images.contiguous(memory_format=trainers[0].memory_format))
        losses = [
            t.loss_fn(member_logits[:, k : k + 1], target, valid)
            for k, (t, (_, target, valid)) in enumerate(zip(trainers, batches))
        ]
        torch.stack(losses).sum().backward()  # block-diagonal: member k's gradient is that of losses[k]
        for t in trainers:
            t.step()
        size = len(batches[0][0])
        totals += np.array([float(loss.detach()) for loss in losses]) * size
        count += size
    val_started = time.perf_counter()
    if trainers[0].average is not None:  # validate the weight averages, stacked the same way
        stack = MemberStack([t.eval_model for t in trainers])
    val_logits = validation_logits(stack, trainers[0].val_images, trainers[0].device)  # same tiles for all
    ended = time.perf_counter()
    for k, t in enumerate(trainers):
        t.end_epoch(val_logits[:, k : k + 1], float(totals[k] / count), ended - started, ended - val_started)


def train_stacked(configs, split, *, out_dirs, device="cpu", log=_log_line, data_sha256=None, on_epoch=None):
    """Train the member ``configs`` together as one stacked network; return their metrics in order.

    Same arguments as :func:`~members.training.train_network`, with one output folder per
    config. Finished members are skipped; unfinished ones resume from ``latest.pt``. Members
    at different epochs (e.g. one resumed further than another) train in groups, the ones
    furthest behind first, so every member runs exactly its own epochs.
    """
    results, trainers = {}, []
    for config, out_dir in zip(configs, out_dirs):
        done = finished_metrics(out_dir)
        if done:
            results[config.name] = done
            continue
        trainers.append(NetworkTrainer(config, split, out_dir, device=device, log=log, data_sha256=data_sha256,
                                       on_epoch=on_epoch))
    if trainers:
        check_stackable(trainers)
    while active := [t for t in trainers if t.active()]:
        epoch = min(t.epoch for t in active)
        stacked_epoch([t for t in active if t.epoch == epoch])
    for t in trainers:
        results[t.config.name] = t.finish(stacked=True)
    return [results[c.name] for c in configs]
