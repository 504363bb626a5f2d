"""Training presets: ``quick`` shows the pipeline in minutes; ``full`` is the best-quality recipe.

Numbers are per network; members and the baseline share epochs, data, augmentation and recipe.
A preset's ``recipe`` is a list of ``--set`` overrides (:mod:`members.overrides`) applied to every
network before the user's own. The recipe comes from the search in the README (Recipe search,
``scripts/recipe_search.py``): a warm-up then a cosine to zero stepped every batch, no early
stopping, and horizontal flips as the only augmentation (rotation and zoom resample the tiles, and
the batch-norm statistics learnt on the blurred tiles misfit sharp ones).
"""
#: The searched recipe shared by both presets.
RECIPE = [
    "schedule=cosine", "warmup_epochs=0.25", "min_lr_ratio=0",
    "augment.rotate_degrees=0", "augment.zoom_min_scale=1",
]

PRESETS = {
    "quick": {
        "member_width": 8,
        "depth": 3,
        "epochs": 3,
        "samples_per_epoch": 640,
        "val_tiles": 384,
        "batch_size": 32,
        "lr": 3e-3,
        "patience": 0,  # no early stopping: the schedule ends at zero
        "recipe": RECIPE,
    },
    "full": {
        # 16 passes over the ~8800 training tiles: members and baseline within 2 hours on 2 CPU cores
        "member_width": 8,
        "depth": 3,
        "epochs": 16,
        "samples_per_epoch": 0,
        "val_tiles": 0,
        "batch_size": 32,
        "lr": 2e-3,
        "patience": 0,
        "recipe": RECIPE + ["snapshot_fractions=[0.125, 0.25, 0.5, 1]"],
    },
}

#: Extra sampling weight of tiles holding a member's class (others 1.0): big rock is 0.5 % of pixels.
SAMPLER_WEIGHTS = {"big_rock": 4.0}


def get_preset(name):
    """A copy of the preset ``name``; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}
