"""One logit offset per class, tuned directly for the headline mean IoU."""
import numpy as np
import torch

from ensemble.core.classes import CLASS_NAMES, NUM_CLASSES, TERRAIN_CLASSES
from ensemble.core.metrics import mean_iou
from ensemble.core.objectives import DEFAULT_OBJECTIVE, HEADLINE_CONVENTION

from .base import Fuser, check_param
from .modules import ChannelAffine
from .sampling import sample_windows


def _score(counts, convention):
    """The mean IoU in ``convention`` of the counts (25,) of pixel codes ``truth * C + prediction`` (``-inf`` when
    undefined)."""
    value = mean_iou(counts.reshape(NUM_CLASSES, NUM_CLASSES), convention)
    return value if np.isfinite(value) else -np.inf


def _wins(class_logits, alt_logits, k_first, offset):
    """Pixels where class ``k``'s logit shifted by ``offset`` (float32) beats the best other class (ties: the lower
    index, ``k_first`` where ``k`` is lower). Monotone in ``offset``: float32 addition rounds monotonically."""
    shifted = class_logits + offset
    return (shifted > alt_logits) | ((shifted == alt_logits) & k_first)


def _walk(pixel_logits, label_codes, biases, *, k, deltas, best, convention):
    """One greedy walk of ``b_k`` over ``biases[k] + deltas`` (ascending) from the score ``best``; return
    ``(biases, best)``; scores in ``convention``.

    Every trial's confusion matrix counts the pixels whose argmax it can change apart from the
    others: the trials until the next accepted move lie between the first and the last of them, so
    a pixel that class ``k`` wins at the lowest offset wins at every one, and one it loses at the
    highest loses at every one. Only the pixels in between are compared per trial; the counts, and
    so every score and every accepted move, are those of comparing every pixel.
    """
    others = pixel_logits + biases
    others[:, k] = -np.inf
    alt = others.argmax(axis=1)
    alt_logits = np.take_along_axis(others, alt[:, None], axis=1)[:, 0]
    alt_codes, k_codes = label_codes + alt, label_codes + k
    class_logits, k_first = pixel_logits[:, k], k < alt
    start = 0
    while start < len(deltas):
        low, high = biases[k] + deltas[start], biases[k] + deltas[-1]
        sure = _wins(class_logits, alt_logits, k_first, low)
        unsure = _wins(class_logits, alt_logits, k_first, high) & ~sure
        settled = np.bincount(np.where(sure, k_codes, alt_codes)[~unsure], minlength=NUM_CLASSES**2)
        logits_u, alt_logits_u, k_first_u = class_logits[unsure], alt_logits[unsure], k_first[unsure]
        k_codes_u, alt_codes_u = k_codes[unsure], alt_codes[unsure]
        moved = None
        for j in range(start, len(deltas)):
            offset = biases[k] + deltas[j]
            wins = _wins(logits_u, alt_logits_u, k_first_u, offset)
            moving = np.bincount(np.where(wins, k_codes_u, alt_codes_u), minlength=NUM_CLASSES**2)
            value = _score(settled + moving, convention)
            if value > best + 1e-9:  # taken at once: the next moves start from here
                moved = j
                best, biases = value, biases.copy()
                biases[k] = offset
                break
        start = len(deltas) if moved is None else moved + 1
    return biases, best


def search_offsets(pixel_logits, label_codes, *, convention, span, steps, rounds):
    """The greedy coordinate search of :class:`BiasFuser` over pixels: ``pixel_logits`` (P, 5) float32, ``label_codes``
    (P,) int64 ``truth * 5``. Returns ``(offsets (5,) float32, score before, score after)``."""
    biases = np.zeros(NUM_CLASSES, dtype=np.float32)
    first = best = _score(np.bincount(label_codes + pixel_logits.argmax(axis=1), minlength=NUM_CLASSES**2), convention)
    for step in range(rounds):
        deltas = np.linspace(-span, span, steps, dtype=np.float32) * np.float32(0.5**step)
        for k in TERRAIN_CLASSES:
            biases, best = _walk(pixel_logits, label_codes, biases, k=k, deltas=deltas, best=best,
                                 convention=convention)
    return biases, first, best


class BiasFuser(Fuser):
    """``fused_logits[:, k] = logits[:, k] + b_k``: the argmax with one offset per class.

    The offsets of the terrain classes 1-4 maximise the mean IoU in the objective's headline
    convention (``competition``: keras ``MeanIoU(ignore_class=0)``) on a seeded sample of at
    most ``max_pixels`` pixels (labeled ones under ``competition``), by greedy coordinate search:
    each class in turn walks a grid of ``steps`` moves spread over ``[-span, span]`` (most negative
    first), and a move that raises the score takes effect at once, so the grid's later moves start
    from it; every one of ``rounds`` rounds halves the span. ``b_0`` stays 0 (a
    shift shared by all classes changes no argmax). A cross-entropy fit cannot find these
    offsets: the networks were trained with class weights, which move their decision
    boundaries towards the rare classes, and the mean IoU prefers other boundaries.

    It maps any 5-class logits, not only the members': ``ensemble evaluate`` also fits it,
    cross-fitted, on the multiclass baseline's logits (row ``baseline_bias``), so the
    baseline gets the same validation-tuned correction the fusers get.

    Fitted attributes: ``biases_`` float32 (5,).
    """

    name = "bias"

    def __init__(self, *, max_pixels=1_000_000, span=2.0, steps=21, rounds=3, seed=0, objective=DEFAULT_OBJECTIVE):
        super().__init__(objective)
        if steps < 2 or rounds < 1 or not span > 0:
            raise ValueError(f"need steps >= 2, rounds >= 1 and span > 0, got {steps}, {rounds}, {span}")
        self._keep(max_pixels=max_pixels, span=span, steps=steps, rounds=rounds, seed=seed)

    def get_params(self):
        """Constructor arguments: ``max_pixels``, ``span``, ``steps``, ``rounds``, ``seed``, ``objective``."""
        return {"max_pixels": int(self.max_pixels), "span": float(self.span), "steps": int(self.steps),
                "rounds": int(self.rounds), "seed": int(self.seed), "objective": self.objective}

    def _fit(self, member_logits, masks):
        rng = np.random.default_rng(self.seed)
        # under competition class 0 is never output, so its input channel is not read: a multiclass
        # network's class logits (class 0 at -inf) are fitted like member logits
        first_class = 1 if self.labeled_only else 0
        windows, labels = sample_windows(member_logits[:, first_class:], masks, np.arange(len(member_logits)),
                                         self.max_pixels, rng, labeled_only=self.labeled_only)
        pixel_logits = np.full((len(labels), NUM_CLASSES), -np.inf, dtype=np.float32)
        pixel_logits[:, first_class:] = windows.reshape(len(labels), -1).numpy()
        # a trial's confusion matrix is a bincount of truth * C + prediction: the truth part is made once
        label_codes = labels.numpy().astype(np.int64) * NUM_CLASSES
        biases, first, best = search_offsets(pixel_logits, label_codes, convention=HEADLINE_CONVENTION[self.objective],
                                             span=self.span, steps=self.steps, rounds=self.rounds)
        self.biases_ = torch.from_numpy(biases)
        return {"fit_pixels": int(len(labels)), "miou_before": float(first), "miou_after": float(best)}

    def _params(self):
        return {"biases": self.biases_}

    def _set_params(self, params):
        self.biases_ = check_param(params, "biases", (NUM_CLASSES,))

    def _build_module(self):
        return ChannelAffine(torch.ones(NUM_CLASSES), self.biases_)

    def _describe_params(self):
        info = self.fit_info_
        convention = HEADLINE_CONVENTION[self.objective]
        return [
            f"offsets tuned on {info['fit_pixels']} pixels: mIoU ({convention}) {info['miou_before']:.4f} (argmax) -> "
            f"{info['miou_after']:.4f}",
            "  ".join(f"{CLASS_NAMES[k]} {float(self.biases_[k]):+.3f}" for k in range(NUM_CLASSES)),
        ]
