"""Training presets: ``quick`` shows the pipeline in minutes; ``full`` is the best-quality recipe.

Both train the recipe that :class:`~members.config.TrainConfig` defaults to, from the search in
the README (Recipe search, ``scripts/recipe_search.py``): a warm-up then a cosine to zero stepped
every batch, no early stopping, horizontal flips, and random degradations of the image (noise, blur,
exposure, resampling, JPEG) on 60 % of the tiles so the masks hold on images that are not lossless
tiles (:data:`ensemble.core.augment.RECIPE`; rotation and zoom stay off: they resample every tile, and
the batch-norm statistics learnt on resampled tiles misfit sharp ones).
A preset holds only the :class:`~members.config.TrainConfig` fields it sets otherwise; members and
the baseline share them, and ``--epochs``, ``--samples-per-epoch`` and ``--set`` override them.
"""
PRESETS = {
    "quick": {
        "epochs": 3,
        "samples_per_epoch": 640,
        "val_tiles": 384,
        "lr": 3e-3,
    },
    "full": {
        # the defaults: 16 passes over the ~8800 training tiles, the whole validation split every epoch;
        # plus the budget curve's snapshots
        "snapshot_fractions": [0.125, 0.25, 0.5, 1],
    },
}

#: Extra sampling weight of tiles holding a member's class (others 1.0): big rock is 0.5 % of pixels.
SAMPLER_WEIGHTS = {"big_rock": 4.0}


def get_preset(name):
    """A copy of the preset ``name`` (its :class:`~members.config.TrainConfig` fields); an unknown name lists
    the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}
