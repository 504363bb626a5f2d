"""Training presets: ``quick`` shows the pipeline in minutes; ``full`` is the best-quality recipe.

Numbers are per network; members and the baseline share epochs, data and augmentation.
"""
PRESETS = {
    "quick": {
        "member_width": 8,
        "depth": 3,
        "epochs": 3,
        "samples_per_epoch": 640,
        "val_tiles": 384,
        "batch_size": 32,
        "lr": 3e-3,
        "patience": 3,
    },
    "full": {
        "member_width": 8,
        "depth": 3,
        "epochs": 10,
        "samples_per_epoch": 3200,
        "val_tiles": 0,
        "batch_size": 32,
        "lr": 2e-3,
        "patience": 4,
    },
}

#: Extra sampling weight of tiles holding a member's class (others 1.0): big rock is 0.5 % of pixels.
SAMPLER_WEIGHTS = {"big_rock": 4.0}


def get_preset(name):
    """A copy of the preset ``name``; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
