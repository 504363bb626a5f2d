"""The naive reference fuser: take the member logits as the class logits."""
import torch

from ensemble.core.classes import NUM_CLASSES

from .base import Fuser
from .modules import ChannelAffine


class ArgmaxFuser(Fuser):
    """Fused logits = member logits, unchanged; the mask is the argmax over the members.

    Under ``competition`` the argmax runs over the terrain members (class 0 is never output).
    ``fit`` learns nothing; it only records the tile ids and sizes. The module is a
    per-channel affine map with scale 1 and bias 0, which is exact in float arithmetic.
    """

    name = "argmax"

    def get_params(self):
        """Constructor arguments: only ``objective``."""
        return {"objective": self.objective}

    def _fit(self, member_logits, masks):
        return {}

    def _params(self):
        return {}

    def _set_params(self, params):
        pass

    def _build_module(self):
        return ChannelAffine(torch.ones(NUM_CLASSES), torch.zeros(NUM_CLASSES))

    def _describe_params(self):
        return ["no fitted parameters: each pixel takes the class of the most confident member"]
