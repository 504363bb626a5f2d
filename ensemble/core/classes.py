"""The five classes of the Kaggle Mars terrain task."""

CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")
NUM_CLASSES = len(CLASS_NAMES)
#: Terrain classes averaged by the competition metric (background excluded).
TERRAIN_CLASSES = (1, 2, 3, 4)
#: The multiclass baseline network, trained beside the members (named by ``CLASS_NAMES``).
BASELINE = "baseline"
#: The baseline with one logit offset per class tuned for the headline mIoU on the validation folds
#: (``fusion.BiasFuser``, cross-fitted): the post-hoc correction the fusers get, given to the baseline too.
TUNED_BASELINE = "baseline_bias"
#: The ensembling control: multiclass U-Nets of the members' width, seeds apart, averaged by softmax
#: (``control_0``, ``control_1``, ...); it separates the one-vs-rest decomposition from averaging.
CONTROL = "control"
#: Multiclass nets in the control by default, one per member.
CONTROL_SIZE = 5


def control_names(size=CONTROL_SIZE):
    """Names of the control's networks: ``control_0`` ... ``control_<size-1>``."""
    return [f"{CONTROL}_{i}" for i in range(size)]


def is_control(name):
    """True for a network of the ensembling control (``control_<i>``)."""
    head, _, index = name.rpartition("_")
    return head == CONTROL and index.isdigit()


def is_multiclass(name):
    """True for the baseline and the control's networks (5 outputs), False for members."""
    return name == BASELINE or is_control(name)


def class_index(name):
    """Return the class id for a class name (``"big_rock"`` or ``"big-rock"``)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; valid: {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(key)
