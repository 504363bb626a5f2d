"""What a run is trained for, chosen at ``train`` time and used by every later step.

* ``competition`` (the default): the AN2DL competition metric
  (:mod:`ensemble.core.metrics`, convention ``competition``), which drops every pixel whose true
  label is 0. Terrain members ignore unlabeled pixels in their loss; the background member
  still learns pixel == 0 vs the rest on all pixels (its logit is an input of the fusers);
  the baseline's cross-entropy runs over classes 1-4 on labeled pixels; fusers are fitted on
  labeled pixels; and no model ever predicts class 0 (its logit is set to -inf, so its
  probability is 0 and the argmax runs over classes 1-4). Early stopping and reports use
  the competition metric.
* ``fullmask``: a full 5-class mask where the background detector decides class 0, trained
  on every pixel and scored by the ``allpixels`` convention.
"""
import functools

OBJECTIVES = ("competition", "fullmask")
DEFAULT_OBJECTIVE = "competition"
#: The IoU convention (see :mod:`ensemble.core.metrics`) that scores each objective: the headline number.
HEADLINE_CONVENTION = {"competition": "competition", "fullmask": "allpixels"}


def check_objective(objective):
    """Return ``objective`` if known, else ``ValueError`` listing the valid ones."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return objective


def predicts_background(objective):
    """True when models of ``objective`` may predict class 0 (``fullmask``)."""
    return check_objective(objective) == "fullmask"


def scored_pixels(masks, objective):
    """Bool array of the pixels ``objective`` is scored on (labeled ones for ``competition``), or None for all."""
    return None if predicts_background(objective) else masks > 0


def mask_background(class_logits):
    """``class_logits`` (N, C, ...) with channel 0 set to -inf: probability 0, never the argmax.

    Built with ``cat`` (no in-place write), so it traces and exports.
    """
    import torch  # here, not at the top: the CLI reads the objective names without loading torch

    blocked = torch.full_like(class_logits[:, :1], float("-inf"))
    return torch.cat([blocked, class_logits[:, 1:]], dim=1)


@functools.cache
def mask_background_module():
    """The ``torch.nn.Module`` class applying :func:`mask_background` (defined on first use, so torch loads lazily)."""
    from torch import nn

    class MaskBackground(nn.Module):
        """:func:`mask_background` as a module, appended to networks and fusers of the ``competition`` objective."""

        def forward(self, class_logits):
            """Class logits (N, C, H, W) with channel 0 at -inf."""
            return mask_background(class_logits)

    return MaskBackground


def for_objective(module, objective):
    """``module`` unchanged for ``fullmask``; followed by a ``MaskBackground`` module for ``competition``."""
    if predicts_background(objective):
        return module
    from torch import nn

    return nn.Sequential(module, mask_background_module()()).eval()
