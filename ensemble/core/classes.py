"""The five classes of the Kaggle Mars terrain task."""
import numpy as np

from .errors import EnsembleError

CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")
NUM_CLASSES = len(CLASS_NAMES)
#: Terrain classes averaged by the competition metric (background excluded).
TERRAIN_CLASSES = (1, 2, 3, 4)
#: Names of the terrain classes, in class order.
TERRAIN_NAMES = tuple(CLASS_NAMES[c] for c in TERRAIN_CLASSES)
#: The multiclass baseline network, trained beside the members (named by ``CLASS_NAMES``).
BASELINE = "baseline"
#: Further multiclass nets of the baseline's width, seeds apart (``baseline_1``, ``baseline_2``, ...). Soft-voted
#: with the baseline they are the multiclass way to spend twice (or more) the baseline's budget.
BASELINE_REPLICA_PREFIX = BASELINE
#: The baseline and ``baseline_1`` soft-voted (mean of their softmax); ``baseline_pair_bias`` adds the bias offsets.
BASELINE_PAIR = "baseline_pair"
BASELINE_PAIR_BIAS = "baseline_pair_bias"
#: The baseline with one logit offset per class tuned for the headline mIoU on the validation folds
#: (``fusion.BiasFuser``, cross-fitted): the post-hoc correction the fusers get, given to the baseline too.
TUNED_BASELINE = "baseline_bias"
#: The ensembling control: multiclass U-Nets of the members' width, seeds apart, averaged by softmax
#: (``control_0``, ``control_1``, ...); it separates the one-vs-rest decomposition from averaging.
CONTROL = "control"
#: Mask value of a pixel with no label at all, not even "unlabeled" (class 0): the tiles of a student's
#: ``--unlabeled`` images, which it learns from through its teacher alone.
NO_LABEL = 255
#: The multiclass network distilled from a served strategy of its run (``ensemble distill``), and it with tuned
#: class offsets.
STUDENT = "student"
TUNED_STUDENT = "student_bias"
#: Multiclass nets in the control by default, one per member.
CONTROL_SIZE = 5


def control_names(size=CONTROL_SIZE):
    """Names of the control's networks: ``control_0`` ... ``control_<size-1>``."""
    return [f"{CONTROL}_{i}" for i in range(size)]


def is_control(name):
    """True for a network of the ensembling control (``control_<i>``)."""
    head, _, index = name.rpartition("_")
    return head == CONTROL and index.isdigit()


def baseline_replica_names(count):
    """Names of the baseline's replicas when ``count`` multiclass nets of its width train: ``baseline_1`` ...."""
    return [f"{BASELINE_REPLICA_PREFIX}_{i}" for i in range(1, count)]


def is_baseline_replica(name):
    """True for a further net of the baseline's width (``baseline_<i>``, i >= 1)."""
    head, _, index = name.rpartition("_")
    return head == BASELINE_REPLICA_PREFIX and index.isdigit() and int(index) >= 1


def is_baseline_like(name):
    """True for the baseline and its replicas: multiclass nets of the width matched to the members."""
    return name == BASELINE or is_baseline_replica(name)


def is_multiclass(name):
    """True for the baseline, its replicas, the control's networks and the student (5 outputs), False for members."""
    return is_baseline_like(name) or is_control(name) or name == STUDENT


def class_index(name):
    """Return the class id for a class name (``"big_rock"`` or ``"big-rock"``)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; valid: {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(key)


def pixel_counts(masks):
    """Pixels of each class in ``masks`` (class ids 0-4), int64 (NUM_CLASSES,).

    One comparison per class over the masks as they are (uint8): ``np.bincount`` would first copy
    every pixel to int64, eight times the masks' size.
    """
    masks = np.asarray(masks)
    return np.array([np.count_nonzero(masks == c) for c in range(NUM_CLASSES)], dtype=np.int64)


def parse_members(spec):
    """``"all"`` or a comma list of class names -> list of class names in class order."""
    if spec in (None, "", "all"):
        return list(CLASS_NAMES)
    try:
        ids = sorted({class_index(part) for part in spec.split(",") if part.strip()})
    except ValueError as exc:
        raise EnsembleError(f"--members: {exc}") from None
    if not ids:
        raise EnsembleError(f"--members: no class named in {spec!r}; valid: all, {', '.join(CLASS_NAMES)}")
    return [CLASS_NAMES[i] for i in ids]
