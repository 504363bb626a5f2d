"""The five classes of the Kaggle Mars terrain task."""

CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")
NUM_CLASSES = len(CLASS_NAMES)
#: Terrain classes averaged by the competition metric (background excluded).
TERRAIN_CLASSES = (1, 2, 3, 4)
#: The multiclass baseline network, trained beside the members (named by ``CLASS_NAMES``).
BASELINE = "baseline"


def class_index(name):
    """Return the class id for a class name (``"big_rock"`` or ``"big-rock"``)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; valid: {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(key)
