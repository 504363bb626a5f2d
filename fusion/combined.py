"""Fusers over several networks of a run: the members with the multiclass baseline, or multiclass nets together.

Each reads the concatenated logits of its :attr:`~fusion.base.Fuser.sources` (five channels per
source) and ends, where it says so, with the per-class offsets of :class:`~fusion.bias.BiasFuser`
tuned for the headline mean IoU on its fit tiles:

* :class:`BaselineBiasFuser` (``baseline_bias``): the baseline's class logits plus the offsets;
* :class:`HybridFuser` (``hybrid``): the members' learned fusion and the baseline, soft-voted
  (a weighted mean of their probabilities), then the offsets;
* :class:`StackedFuser` (``stacked``): scikit-learn's stacking on pixels: a 1x1 convolution over the
  member logits and the baseline's class logits (10 inputs), started at the mean of the two
  sources' class logits and trained like :class:`~fusion.learned.LearnedFuser`, then the offsets;
* :class:`BaselinePairFuser` / :class:`BaselinePairBiasFuser` (``baseline_pair``,
  ``baseline_pair_bias``): the baseline and its replica ``baseline_1`` soft-voted with equal
  weights, without and with the offsets: the multiclass model at twice the baseline's budget.
"""
import numpy as np
import torch
from torch import nn

from ensemble.core.classes import CLASS_NAMES, NUM_CLASSES
from ensemble.core.metrics import confusion_matrix, mean_iou
from ensemble.core.objectives import DEFAULT_OBJECTIVE, HEADLINE_CONVENTION

from .base import Fuser, channel_argmax, check_param
from .bias import BiasFuser
from .learned import LearnedFuser
from .modules import ChannelAffine, FiniteLogits, FusionConv, SoftVote
from .sampling import sample_windows

#: Mixing weights of the first source tried when a soft vote's weight is fitted.
MIX_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))


def _describe_offsets(offsets):
    return "offsets: " + "  ".join(f"{CLASS_NAMES[k]} {float(offsets[k]):+.3f}" for k in range(NUM_CLASSES))


class BaselineBiasFuser(BiasFuser):
    """:class:`~fusion.bias.BiasFuser` on the baseline's class logits: the baseline given the fusers' correction."""

    name = "baseline_bias"
    sources = ("baseline",)


class StudentBiasFuser(BiasFuser):
    """:class:`~fusion.bias.BiasFuser` on the distilled student's class logits (``ensemble distill``)."""

    name = "student_bias"
    sources = ("student",)


class SoftVoteFuser(Fuser):
    """Two sources soft-voted: ``log(w * softmax(first) + (1 - w) * softmax(second))`` plus tuned offsets.

    ``first`` is the first source's logits passed through :meth:`_fit_first` (the members' learned
    fusion for :class:`HybridFuser`; unchanged here). ``mix`` is ``w``, or ``None`` to pick it from
    :data:`MIX_GRID` by the headline mean IoU on a seeded pixel sample of the fit tiles.
    ``offsets=True`` then tunes one offset per class for the headline mean IoU
    (:class:`~fusion.bias.BiasFuser` with ``seed``). Fitted attributes: ``mix_`` (float),
    ``offsets_`` (5,) float32.
    """

    name = None
    sources = ("baseline", "baseline_1")
    tunes_offsets = False

    def __init__(self, *, mix=0.5, max_pixels=1_000_000, seed=0, objective=DEFAULT_OBJECTIVE):
        super().__init__(objective)
        if mix is not None and not 0.0 <= float(mix) <= 1.0:
            raise ValueError(f"mix must be in [0, 1] or None (fitted), got {mix}")
        self.mix = None if mix is None else float(mix)
        self.max_pixels = max_pixels
        self.seed = seed

    def get_params(self):
        """Constructor arguments as plain types."""
        return {"mix": self.mix, "max_pixels": int(self.max_pixels), "seed": int(self.seed),
                "objective": self.objective}

    def _fit_first(self, first_logits, masks):
        """The first source's logits as they enter the vote, and fit information (none here)."""
        return first_logits, {}

    def _first_module(self):
        return nn.Identity()

    def _fit(self, input_logits, masks):
        first_logits, info = self._fit_first(input_logits[:, :NUM_CLASSES], masks)
        first_probs = torch.softmax(first_logits, dim=1)
        second_probs = torch.softmax(input_logits[:, NUM_CLASSES:], dim=1)
        del first_logits
        self.mix_ = self.mix if self.mix is not None else self._fitted_mix(first_probs, second_probs, masks)
        mixed_logits = torch.log(self.mix_ * first_probs + (1 - self.mix_) * second_probs)
        del first_probs, second_probs
        offsets = torch.zeros(NUM_CLASSES)
        if self.tunes_offsets:
            tuner = BiasFuser(max_pixels=self.max_pixels, seed=self.seed, objective=self.objective)
            offsets = tuner.fit(mixed_logits, masks).biases_
            info.update(offsets_miou_before=tuner.fit_info_["miou_before"],
                        offsets_miou_after=tuner.fit_info_["miou_after"])
        self.offsets_ = offsets.float()
        return {**info, "mix": float(self.mix_), "mix_fitted": self.mix is None}

    def _fitted_mix(self, first_probs, second_probs, masks):
        """The weight of :data:`MIX_GRID` with the best headline mIoU on a pixel sample (ties: nearest 0.5)."""
        rng = np.random.default_rng(self.seed)
        both = torch.cat([first_probs, second_probs], dim=1)
        windows, labels = sample_windows(both, masks, np.arange(len(both)), self.max_pixels, rng,
                                         labeled_only=self.labeled_only)
        pixels = windows.reshape(len(labels), -1)
        first, second, labels = pixels[:, :NUM_CLASSES], pixels[:, NUM_CLASSES:], labels.numpy()
        convention = HEADLINE_CONVENTION[self.objective]

        def score(w):
            pred = channel_argmax((w * first + (1 - w) * second)[:, :, None, None])[:, 0, 0].numpy()
            value = mean_iou(confusion_matrix(labels, pred), convention)
            return (value if np.isfinite(value) else -np.inf, -abs(w - 0.5))

        return float(max(MIX_GRID, key=score))

    def _params(self):
        return {"mix": torch.tensor([self.mix_], dtype=torch.float32), "offsets": self.offsets_}

    def _set_params(self, params):
        self.mix_ = float(check_param(params, "mix", (1,))[0])
        self.offsets_ = check_param(params, "offsets", (NUM_CLASSES,))

    def _build_module(self):
        return SoftVote(self._first_module(), self.mix_, self.offsets_)

    def _describe_params(self):
        info = self.fit_info_
        first, second = self.sources
        how = "fitted" if info.get("mix_fitted") else "fixed"
        lines = [f"probabilities = {self.mix_:.2f} x {self._first_label()} + {1 - self.mix_:.2f} x {second} "
                 f"(weight {how})"]
        if self.tunes_offsets:
            lines.append(f"offsets tuned for mIoU ({HEADLINE_CONVENTION[self.objective]}): "
                         f"{info['offsets_miou_before']:.4f} -> {info['offsets_miou_after']:.4f}")
            lines.append(_describe_offsets(self.offsets_))
        return lines

    def _first_label(self):
        return self.sources[0]


class BaselinePairFuser(SoftVoteFuser):
    """The baseline and ``baseline_1`` (another seed) soft-voted with equal weights; nothing is tuned."""

    name = "baseline_pair"


class BaselinePairBiasFuser(SoftVoteFuser):
    """:class:`BaselinePairFuser` with the per-class offsets tuned for the headline mIoU."""

    name = "baseline_pair_bias"
    tunes_offsets = True


class VoteFuser(SoftVoteFuser):
    """The members' logits, read as class logits, and the baseline soft-voted with equal weights; nothing is fitted,
    so a model distilled from it has seen nothing of the validation tiles through a teacher's parameters."""

    name = "vote"
    sources = ("members", "baseline")


class HybridFuser(SoftVoteFuser):
    """The members' learned fusion (:class:`~fusion.learned.LearnedFuser`, fitted here) soft-voted with the
    baseline, then the per-class offsets.

    ``drop_member`` (a class id, or ``None``) replaces that member's logit map by zeros before the
    learned fusion: the hybrid without that specialist, for the ablation. Fitted attributes as
    :class:`SoftVoteFuser`, plus ``inner_`` (the fitted learned fuser).
    """

    name = "hybrid"
    sources = ("members", "baseline")
    tunes_offsets = True

    def __init__(self, *, mix=0.5, drop_member=None, max_pixels=1_000_000, seed=0, objective=DEFAULT_OBJECTIVE):
        super().__init__(mix=mix, max_pixels=max_pixels, seed=seed, objective=objective)
        if drop_member is not None and not 0 <= int(drop_member) < NUM_CLASSES:
            raise ValueError(f"drop_member must be a class id 0-{NUM_CLASSES - 1} or None, got {drop_member}")
        self.drop_member = None if drop_member is None else int(drop_member)

    def get_params(self):
        """Constructor arguments as plain types."""
        return {**super().get_params(), "drop_member": self.drop_member}

    def _member_scales(self):
        scales = torch.ones(NUM_CLASSES)
        if self.drop_member is not None:
            scales[self.drop_member] = 0.0
        return scales

    def _fit_first(self, member_logits, masks):
        member_logits = member_logits * self._member_scales().reshape(1, -1, 1, 1)
        self.inner_ = LearnedFuser(seed=self.seed, objective=self.objective).fit(member_logits, masks)
        info = {f"learned_{k}": v for k, v in self.inner_.fit_info_.items() if not isinstance(v, (list, dict))}
        return self.inner_.predict_logits(member_logits), info

    def _first_module(self):
        return nn.Sequential(ChannelAffine(self._member_scales(), torch.zeros(NUM_CLASSES)), self.inner_.module())

    def _params(self):
        return {**super()._params(), "inner_weight": self.inner_.weight_, "inner_bias": self.inner_.bias_}

    def _set_params(self, params):
        super()._set_params(params)
        self.inner_ = LearnedFuser(seed=self.seed, objective=self.objective)
        self.inner_._set_params({"weight": params.get("inner_weight"), "bias": params.get("inner_bias")})
        self.inner_.fitted_tile_ids_ = []

    def _first_label(self):
        dropped = "" if self.drop_member is None else f" without {CLASS_NAMES[self.drop_member]}"
        return f"learned(members{dropped})"

    def _describe_params(self):
        lines = super()._describe_params()
        lines.append("learned fusion of the members (rows: fused class, columns: member):")
        lines.extend("  " + f"{name:<10}" + "".join(f"{float(v):>8.3f}" for v in row) + f"{float(b):>+9.3f}"
                     for name, row, b in zip(CLASS_NAMES, self.inner_.weight_, self.inner_.bias_))
        return lines


class StackedFuser(LearnedFuser):
    """A 1x1 convolution over the member logits and the baseline's class logits, then the offsets.

    Like scikit-learn's ``StackingClassifier`` on pixels: the final estimator is fitted on the
    validation tiles, which neither base model trained on. The kernel starts at the mean of the
    two sources' class logits (``0.5 * member_k + 0.5 * baseline_k``) and is trained like
    :class:`~fusion.learned.LearnedFuser` (class-weighted cross-entropy, early stopping on held-out
    calibration tiles, kept never worse than the start there). A non-finite input (the baseline's
    class-0 logit, -inf under ``competition``) enters as 0. The per-class offsets are then tuned for
    the headline mIoU (:class:`~fusion.bias.BiasFuser` with ``seed``). Fitted attributes:
    ``weight_`` (5, 10), ``bias_`` (5,), ``offsets_`` (5,).
    """

    name = "stacked"
    sources = ("members", "baseline")

    def __init__(self, *, kernel_size=1, **kwargs):
        if kernel_size != 1:
            raise ValueError(f"the stacked fuser is a 1x1 convolution, got kernel_size {kernel_size}")
        super().__init__(kernel_size=1, **kwargs)

    def _fit(self, input_logits, masks):
        finite = FiniteLogits()(input_logits)
        info = super()._fit(finite, masks)
        head = FusionConv(self.weight_.reshape(NUM_CLASSES, -1, 1, 1), self.bias_)
        with torch.no_grad():
            stacked_logits = head(finite)
        del finite
        tuner = BiasFuser(seed=self.seed, objective=self.objective)
        self.offsets_ = tuner.fit(stacked_logits, masks).biases_.float()
        return {**info, "offsets_miou_before": tuner.fit_info_["miou_before"],
                "offsets_miou_after": tuner.fit_info_["miou_after"]}

    def _params(self):
        return {**super()._params(), "offsets": self.offsets_}

    def _set_params(self, params):
        super()._set_params(params)
        self.offsets_ = check_param(params, "offsets", (NUM_CLASSES,))

    def _build_module(self):
        return nn.Sequential(FiniteLogits(), super()._build_module(),
                             ChannelAffine(torch.ones(NUM_CLASSES), self.offsets_))

    def _describe_params(self):
        info = self.fit_info_
        return [*super()._describe_params(),
                f"offsets tuned for mIoU ({HEADLINE_CONVENTION[self.objective]}): "
                f"{info['offsets_miou_before']:.4f} -> {info['offsets_miou_after']:.4f}",
                _describe_offsets(self.offsets_)]
