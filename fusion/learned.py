"""A learned linear (1x1) or small-window (k x k) convolution over the member logits."""
import numpy as np
import torch
import torch.nn.functional as F

from ensemble.core.classes import CLASS_NAMES, NUM_CLASSES
from ensemble.core.metrics import confusion_matrix, mean_iou, nll
from ensemble.core.objectives import DEFAULT_OBJECTIVE, HEADLINE_CONVENTION, for_objective
from ensemble.core.weights import class_weights

from .base import Fuser, check_param
from .modules import FusionConv
from .sampling import sample_windows, split_tiles


def holdout_score(fused_logits, labels, convention):
    """(mean IoU in ``convention``, NLL) of fused pixel logits (P, 5) against labels (P,)."""
    cm = confusion_matrix(labels.numpy(), fused_logits.argmax(dim=1).numpy())
    return mean_iou(cm, convention), nll(torch.softmax(fused_logits, dim=1), labels)


class LearnedFuser(Fuser):
    """``Conv2d(5, 5, kernel_size, padding=kernel_size // 2)`` over the member logits.

    Initialised at the identity (centre tap 1 on the diagonal, 0 elsewhere, bias 0), so it
    starts as the argmax fuser. Trained with class-weighted cross-entropy (weights from
    :func:`~ensemble.core.weights.class_weights` of the fit masks; under the ``competition`` objective on labeled
    pixels, over the fused logits of classes 1-4, the class-0 output being -inf) and AdamW (weight decay on the
    kernel only), in mini-batches of ``batch_pixels`` from a seeded sample of at most ``max_pixels`` pixels
    (with their k x k windows) of the training tiles.

    Early stopping: ``holdout_fraction`` of the tiles (a random split with ``seed``; tiles of
    one source image may fall on both sides, which only makes the stopping point a little
    optimistic) are held out and
    a sample of at most ``max_pixels // 4`` of their pixels is scored after every epoch,
    and before the first, at the identity. The kept state is the best by held-out mean IoU in
    the objective's headline convention, ties broken by lower held-out NLL; training stops after
    ``patience`` epochs without improvement. Because the identity is scored too, the kept
    fuser is never worse than ``argmax`` on the held-out sample. With no holdout
    (``holdout_fraction=0`` or a single tile) it trains ``max_epochs`` and keeps the last state.

    Fitted attributes: ``weight_`` (5, 5) for a 1x1 kernel, else (5, 5, k, k), rows are
    fused classes and columns members; ``bias_`` (5,). Deterministic for a given ``seed``.
    """

    name = "learned"

    def __init__(self, *, kernel_size=1, max_epochs=50, lr=0.02, weight_decay=1e-4, patience=8,
                 holdout_fraction=0.2, max_pixels=200_000, batch_pixels=8192, seed=0, objective=DEFAULT_OBJECTIVE):
        super().__init__(objective)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self._keep(kernel_size=kernel_size, max_epochs=max_epochs, lr=lr, weight_decay=weight_decay, patience=patience,
                   holdout_fraction=holdout_fraction, max_pixels=max_pixels, batch_pixels=batch_pixels, seed=seed)

    def get_params(self):
        """Constructor arguments as plain types."""
        return {
            "kernel_size": int(self.kernel_size), "max_epochs": int(self.max_epochs), "lr": float(self.lr),
            "weight_decay": float(self.weight_decay), "patience": int(self.patience),
            "holdout_fraction": float(self.holdout_fraction), "max_pixels": int(self.max_pixels),
            "batch_pixels": int(self.batch_pixels), "seed": int(self.seed), "objective": self.objective,
        }

    def _kernel_shape(self):
        k, inputs = self.kernel_size, self.input_channels
        return (NUM_CLASSES, inputs) if k == 1 else (NUM_CLASSES, inputs, k, k)

    def _initial_kernel(self):
        """The starting kernel (5, inputs, k, k): the mean of the sources' logits of each class (centre tap)."""
        k, pad, n = self.kernel_size, self.kernel_size // 2, len(self.sources)
        kernel = torch.zeros(NUM_CLASSES, self.input_channels, k, k)
        kernel[:, :, pad, pad] = torch.eye(NUM_CLASSES).repeat(1, n) / n
        return kernel

    def _fit(self, member_logits, masks):
        rng = np.random.default_rng(self.seed)
        train_tiles, holdout_tiles = split_tiles(len(member_logits), self.holdout_fraction, rng)
        train = self._sample(member_logits, masks, train_tiles, self.max_pixels, rng)
        holdout = None
        if len(holdout_tiles):
            holdout = self._sample(member_logits, masks, holdout_tiles, max(self.max_pixels // 4, 1), rng)
        counts = torch.bincount(torch.as_tensor(masks).reshape(-1).long(), minlength=NUM_CLASSES)
        weights = class_weights(counts, ignore=(0,) if self.labeled_only else ())
        (kernel, bias), history = self._train(train, holdout, weights)
        self._set_fitted(kernel.reshape(self._kernel_shape()), bias)
        return {
            "train_tiles": len(train_tiles), "holdout_tiles": len(holdout_tiles),
            "train_pixels": len(train[1]), "holdout_pixels": len(holdout[1]) if holdout else 0,
            "class_weights": [round(float(w), 4) for w in weights],
            **history,
        }

    def _sample(self, member_logits, masks, tiles, max_pixels, rng):
        windows, labels = sample_windows(member_logits, masks, tiles, max_pixels, rng, kernel_size=self.kernel_size,
                                         labeled_only=self.labeled_only)
        return windows.reshape(len(labels), -1), labels

    def _train(self, train, holdout, weights):
        """AdamW on (windows, labels) ``train``; returns the kept (kernel, bias) and a history dict."""
        kernel = self._initial_kernel().reshape(NUM_CLASSES, -1).requires_grad_()
        bias = torch.zeros(NUM_CLASSES, requires_grad=True)
        optimizer = torch.optim.AdamW(
            [{"params": [kernel], "weight_decay": self.weight_decay}, {"params": [bias], "weight_decay": 0.0}],
            lr=self.lr,
        )
        generator = torch.Generator().manual_seed(self.seed)
        head = for_objective(torch.nn.Identity(), self.objective)
        convention = HEADLINE_CONVENTION[self.objective]

        def snapshot():
            return kernel.detach().clone(), bias.detach().clone()

        def score():  # (held-out mIoU 1-4, -NLL): larger is better, compared as a tuple
            with torch.no_grad():
                miou, held_nll = holdout_score(head(holdout[0] @ kernel.T + bias), holdout[1], convention)
            return (miou if np.isfinite(miou) else -np.inf, -held_nll)

        windows, labels = train
        first = best = score() if holdout else None
        kept, best_epoch, epoch, stale = snapshot(), 0, 0, 0
        for epoch in range(1, self.max_epochs + 1):
            for batch in torch.randperm(len(labels), generator=generator).split(self.batch_pixels):
                optimizer.zero_grad()
                F.cross_entropy(head(windows[batch] @ kernel.T + bias), labels[batch], weight=weights).backward()
                optimizer.step()
            current = score() if holdout else None
            if holdout is None or current > best:
                best, kept, best_epoch, stale = current, snapshot(), epoch, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        history = {"epochs_run": epoch, "best_epoch": best_epoch}
        if holdout:
            history.update(
                holdout_miou_identity=float(first[0]), holdout_miou_best=float(best[0]),
                holdout_nll_identity=float(-first[1]), holdout_nll_best=float(-best[1]),
            )
        return kept, history

    def _set_fitted(self, weight, bias):
        self.weight_ = weight
        self.bias_ = bias

    def _params(self):
        return {"weight": self.weight_, "bias": self.bias_}

    def _set_params(self, params):
        self._set_fitted(check_param(params, "weight", self._kernel_shape()),
                         check_param(params, "bias", (NUM_CLASSES,)))

    def centre_taps(self):
        """The (5, inputs) centre taps of the fitted kernel (the whole matrix for a 1x1 kernel)."""
        self._check_fitted()
        pad = self.kernel_size // 2
        return self.weight_ if self.kernel_size == 1 else self.weight_[:, :, pad, pad]

    def _build_module(self):
        k = self.kernel_size
        return FusionConv(self.weight_.reshape(NUM_CLASSES, self.input_channels, k, k), self.bias_)

    def _describe_params(self):
        info = self.fit_info_
        lines = []
        if info["holdout_tiles"]:
            lines.append(
                f"early stopping on {info['holdout_tiles']} held-out tiles: best epoch {info['best_epoch']} of "
                f"{info['epochs_run']}, held-out mIoU ({HEADLINE_CONVENTION[self.objective]}) "
                f"{info['holdout_miou_identity']:.4f} (identity) -> "
                f"{info['holdout_miou_best']:.4f}, NLL {info['holdout_nll_identity']:.4f} -> "
                f"{info['holdout_nll_best']:.4f}"
            )
        else:
            lines.append(f"no held-out tiles: trained {info['epochs_run']} epochs, kept the last")
        taps = ("weights" if self.kernel_size == 1
                else f"centre taps of the {self.kernel_size}x{self.kernel_size} kernel")
        what = "member logits" if self.sources == ("members",) else f"input logits ({' + '.join(self.sources)})"
        lines.append(f"fused logit = {taps} x {what} + bias (rows: fused class, columns: input)")
        columns = [name if source == "members" else f"{source[:4]}:{name[:6]}"
                   for source in self.sources for name in CLASS_NAMES]
        lines.append(" " * 10 + "".join(f"{name:>11}" for name in columns) + f"{'bias':>11}")
        for name, row, b in zip(CLASS_NAMES, self.centre_taps(), self.bias_):
            lines.append(f"{name:<10}" + "".join(f"{float(v):>11.3f}" for v in row) + f"{float(b):>+11.3f}")
        if self.kernel_size > 1:
            off_centre = self.weight_.abs().sum() - self.centre_taps().abs().sum()
            lines.append(f"sum of |off-centre taps|: {float(off_centre):.3f}")
        return lines


class Learned3x3Fuser(LearnedFuser):
    """:class:`LearnedFuser` with a 3x3 kernel: each fused logit also sees the 8 neighbours."""

    name = "learned3x3"

    def __init__(self, *, kernel_size=3, **kwargs):
        super().__init__(kernel_size=kernel_size, **kwargs)
