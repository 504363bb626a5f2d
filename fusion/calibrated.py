"""Per-member temperature and bias calibration before the argmax."""
import numpy as np
import torch
import torch.nn.functional as F

from ensemble.core.classes import CLASS_NAMES, NUM_CLASSES
from ensemble.core.metrics import nll
from ensemble.core.objectives import DEFAULT_OBJECTIVE, for_objective

from .base import Fuser, check_param
from .modules import ChannelAffine
from .sampling import sample_windows


class CalibratedFuser(Fuser):
    """Per-member scale and shift: ``fused_logits[:, k] = a_k * member_logits[:, k] + b_k``.

    ``a`` and ``b`` minimise the NLL of the 5-way softmax (``competition``: the 4-way softmax
    of the terrain classes, on labeled pixels) on a seeded random sample of at
    most ``max_pixels`` calibration pixels, with L-BFGS (strong Wolfe line search) from
    ``a = 1, b = 0``. ``a_k`` is kept positive by optimising ``log a_k``; ``b`` is centred to
    mean 0 afterwards (the softmax ignores a shift shared by all classes).

    Fitted attributes: ``scales_`` (a), ``temperatures_`` (1 / a), ``biases_`` (b), all
    float32 tensors of shape (5,).
    """

    name = "calibrated"

    def __init__(self, *, max_pixels=200_000, seed=0, max_iter=100, objective=DEFAULT_OBJECTIVE):
        super().__init__(objective)
        self.max_pixels = max_pixels
        self.seed = seed
        self.max_iter = max_iter

    def get_params(self):
        """Constructor arguments: ``max_pixels``, ``seed``, ``max_iter``, ``objective``."""
        return {"max_pixels": int(self.max_pixels), "seed": int(self.seed), "max_iter": int(self.max_iter),
                "objective": self.objective}

    def _fit(self, member_logits, masks):
        rng = np.random.default_rng(self.seed)
        windows, labels = sample_windows(member_logits, masks, np.arange(len(member_logits)), self.max_pixels, rng,
                                         labeled_only=self.labeled_only)
        pixel_logits = windows.reshape(len(labels), NUM_CLASSES).double()
        head = for_objective(torch.nn.Identity(), self.objective)
        log_scales = torch.zeros(NUM_CLASSES, dtype=torch.float64, requires_grad=True)
        biases = torch.zeros(NUM_CLASSES, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [log_scales, biases], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe",
            tolerance_grad=1e-9, tolerance_change=1e-12,
        )

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(head(pixel_logits * log_scales.exp() + biases), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            self._set_fitted(log_scales.exp().float(), (biases - biases.mean()).float())
            fused_logits = pixel_logits * self.scales_.double() + self.biases_.double()
        return {
            "sample_pixels": len(labels),
            "lbfgs_iterations": int(optimizer.state[log_scales]["n_iter"]),
            "sample_nll_before": nll(torch.softmax(head(pixel_logits), dim=1), labels),
            "sample_nll_after": nll(torch.softmax(head(fused_logits), dim=1), labels),
        }

    def _set_fitted(self, scales, biases):
        self.scales_ = scales
        self.biases_ = biases
        self.temperatures_ = 1.0 / scales

    def _params(self):
        return {"scales": self.scales_, "biases": self.biases_}

    def _set_params(self, params):
        self._set_fitted(check_param(params, "scales", (NUM_CLASSES,)), check_param(params, "biases", (NUM_CLASSES,)))

    def _build_module(self):
        return ChannelAffine(self.scales_, self.biases_)

    def _describe_params(self):
        info = self.fit_info_
        lines = [
            f"NLL on {info['sample_pixels']} sampled fit pixels: "
            f"{info['sample_nll_before']:.4f} -> {info['sample_nll_after']:.4f}"
        ]
        for name, temperature, scale, bias in zip(CLASS_NAMES, self.temperatures_, self.scales_, self.biases_):
            lines.append(f"{name:<10} temperature {float(temperature):9.4g}  scale {float(scale):9.4g}  "
                         f"bias {float(bias):+9.4g}")
        return lines
