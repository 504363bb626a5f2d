"""The optimiser's side of training: learning-rate schedules, the weight average, and the optimiser state's
memory layout after a resume."""
import copy
import math

import torch

from .config import SCHEDULES


def match_parameter_layout(optimizer):
    """Give the optimiser's per-parameter state tensors their parameter's memory layout (in place).

    Checkpoints store them contiguous; after loading, the moments of a channels-last weight
    are channels-last again, exactly as in a run that was never interrupted.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def build_scheduler(optimizer, config, steps_per_epoch):
    """The learning-rate scheduler of ``config.schedule`` (:data:`SCHEDULES`) for ``optimizer``."""
    if config.schedule == "cosine_epoch":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs,
                                                          eta_min=config.lr * config.min_lr_ratio)
    if config.schedule != "cosine":
        raise ValueError(f"unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}")
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    floor = config.min_lr_ratio

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (``ema_decay``).

    After update ``t`` the average moves towards the model by ``1 - d`` with
    ``d = min(decay, (1 + t) / (10 + t))``, so early updates are not dominated by the random
    initial weights. ``module`` is an eval-mode copy of the model holding the average.
    """

    def __init__(self, model, decay):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        """Move the average one step towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1 - d)
            else:
                average.copy_(current)

    def state_dict(self):
        """Weights and update count, for ``latest.pt``."""
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
