"""How one network trains: :class:`TrainConfig`, its schedules and its optional settings (a teacher, trained weights
to start from), as recorded in a run's ``config.json``."""
import hashlib
import math
from dataclasses import asdict, dataclass, field

from ensemble.core.augment import RECIPE as AUGMENT_RECIPE
from ensemble.core.classes import NUM_CLASSES
from ensemble.core.objectives import DEFAULT_OBJECTIVE, predicts_background
from ensemble.core.split import tiles_per_epoch

#: Learning-rate schedules. ``cosine``: stepped every optimiser step, a linear warm-up over
#: ``warmup_epochs`` then a cosine down to ``lr * min_lr_ratio`` at the last step. ``cosine_epoch``:
#: cosine annealing stepped once per epoch, from ``lr`` to ``lr * min_lr_ratio`` at the last epoch.
SCHEDULES = ("cosine_epoch", "cosine")


#: A distilled network's ``distill`` settings, with their defaults: the teacher (a served strategy of the run,
#: required), the weight of the label loss (the teacher's KL term gets ``1 - alpha``), the softmax temperature,
#: and the images it learns from through the teacher alone (``{"source", "scale", "sha256", "tiles"}``, or None).
DISTILL_DEFAULTS = {"teacher": None, "alpha": 0.5, "temperature": 2.0, "unlabeled": None}
DISTILL_KEYS = tuple(DISTILL_DEFAULTS)
#: A network started from trained weights records where they came from: the source run folder (absolute) and the
#: sha256 of that run's ``best.pt`` of the network with the same name, checked again when the weights are loaded.
INIT_FROM_KEYS = ("run", "sha256")
#: Config keys recorded only when set (:meth:`TrainConfig.to_dict`).
OPTIONAL_KEYS = ("distill", "init_from")


@dataclass
class TrainConfig:
    """How to train one network. ``target`` is the member's class id, or ``None`` for the baseline.

    The defaults are the searched recipe both presets train (:mod:`members.presets`): AdamW, a warm-up
    then a cosine to zero stepped every batch, no early stopping, flips and degradations
    (:data:`ensemble.core.augment.RECIPE`). A run's ``config.json``
    records every field; a key an older file lacks is read from the table kept beside the format
    version (``ensemble.TRAIN_CONFIG_V1_DEFAULTS``), never from these defaults.
    """

    name: str
    target: int = None
    model: dict = field(default_factory=dict)
    epochs: int = 16
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 0  # 0: no early stopping (best.pt is still the best validation epoch)
    samples_per_epoch: int = 0  # 0: every training tile once per epoch
    val_tiles: int = 0  # 0: the whole validation split every epoch
    sampler_weight: float = 1.0  # weight of tiles holding the target class (big rock for the baseline)
    loss: str = "bce_dice"
    pos_weight: float = None  # None: from the class's pixel share
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    objective: str = DEFAULT_OBJECTIVE  # competition: unlabeled pixels ignored, class 0 never predicted
    augment: dict = field(default_factory=lambda: AUGMENT_RECIPE.to_dict())
    distill: dict = field(default_factory=dict)  # a multiclass student's teacher: see DISTILL_KEYS; {}: labels only
    init_from: dict = field(default_factory=dict)  # starting weights: see INIT_FROM_KEYS; {}: a fresh initialisation
    schedule: str = "cosine"  # see SCHEDULES
    warmup_epochs: float = 0.25  # "cosine": linear warm-up over this many epochs (fractions allowed)
    min_lr_ratio: float = 0.0  # the schedule ends at lr * min_lr_ratio
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    snapshot_fractions: list = field(default_factory=list)  # budget-curve points: shares of the epochs
    replica: int = 0  # control networks: which of the multiclass nets (seeds apart)
    seed: int = 0
    seed_from_name: bool = False  # True: the network seed is drawn from (seed, name); see network_seed

    def to_dict(self):
        """Plain dict for JSON and checkpoints. ``distill`` and ``init_from`` are left out when empty: they are
        recorded only for a distilled network and one started from trained weights, so every other network's
        config (and its digest) reads as it did before either existed."""
        values = asdict(self)
        for key in OPTIONAL_KEYS:
            if not values[key]:
                del values[key]
        return values

    @property
    def is_member(self):
        """True for a one-vs-rest member, False for the multiclass baseline."""
        return self.target is not None

    @property
    def ignores_unlabeled(self):
        """True when unlabeled pixels are left out of this network's loss and score.

        Under the ``competition`` objective every network but the background member ignores them.
        """
        return not predicts_background(self.objective) and self.target != 0

    def check(self):
        """``ValueError`` naming the first setting out of its range (schedule, rates, sizes)."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        ranges = {"ema_decay": (0.0, 1.0), "min_lr_ratio": (0.0, 1.0), "model.dropout": (0.0, 1.0)}
        values = {"ema_decay": self.ema_decay, "min_lr_ratio": self.min_lr_ratio,
                  "model.dropout": self.model.get("dropout", 0.0)}
        for key, (low, high) in ranges.items():
            if not low <= values[key] < high and not (key == "min_lr_ratio" and values[key] == 1.0):
                raise ValueError(f"{key}: {values[key]} is outside [{low}, {high})")
        if any(not 0 < f <= 1 for f in self.snapshot_fractions):
            raise ValueError(f"snapshot_fractions: each must be in (0, 1], got {self.snapshot_fractions}")
        self._check_distill()
        if self.init_from and sorted(self.init_from) != sorted(INIT_FROM_KEYS):
            raise ValueError(f"init_from: expected the keys {', '.join(INIT_FROM_KEYS)}, got "
                             f"{', '.join(sorted(self.init_from)) or 'none'}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")
        for key in ("lr", "warmup_epochs", "weight_decay", "patience", "samples_per_epoch", "val_tiles",
                    "sampler_weight", "dice_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must not be negative, got {getattr(self, key)}")
        return self

    def _check_distill(self):
        if not self.distill:
            return
        unknown = sorted(set(self.distill) - set(DISTILL_KEYS))
        if unknown:
            raise ValueError(f"distill.{unknown[0]}: unknown; valid: {', '.join(DISTILL_KEYS)}")
        if self.is_member:
            raise ValueError("distill: only a multiclass network learns from a teacher, not a one-vs-rest member")
        if not self.distill.get("teacher"):
            raise ValueError("distill.teacher: the strategy whose logits the student learns from is required")
        alpha, temperature = self.distill_settings()[1:]
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha: must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"distill.temperature: must be positive, got {temperature}")

    def distill_settings(self):
        """``(teacher, alpha, temperature)`` of a distilled network (:data:`DISTILL_KEYS`' defaults filled in),
        ``(None, 1.0, 1.0)`` for one trained on labels alone."""
        if not self.distill:
            return None, 1.0, 1.0
        values = {**DISTILL_DEFAULTS, **self.distill}
        return values["teacher"], float(values["alpha"]), float(values["temperature"])

    def steps_per_epoch(self, train_tiles):
        """Optimiser steps in one epoch when ``train_tiles`` tiles are available for training."""
        return math.ceil(tiles_per_epoch(self.samples_per_epoch, train_tiles) / self.batch_size)

    def snapshot_epochs(self):
        """Epochs after which ``best.pt`` is copied for the budget curve: each fraction of ``epochs``, rounded, >= 1."""
        return sorted({min(self.epochs, max(1, round(f * self.epochs))) for f in self.snapshot_fractions})

    def network_seed(self):
        """Seed of this network: the run seed combined with its identity.

        Members and the baseline: ``seed * 1009`` plus the class id (the baseline: 5). Networks with
        ``seed_from_name`` (the baseline's replicas and the control's nets) hash the run seed and their
        name, so no two networks of a run share a seed. Configs recorded without ``seed_from_name``
        keep the class-and-replica formula they were trained with.
        """
        if self.seed_from_name:
            digest = hashlib.sha256(f"{self.seed}:{self.name}".encode()).digest()
            return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
        index = self.target if self.is_member else NUM_CLASSES
        return self.seed * 1009 + index + 101 * self.replica
