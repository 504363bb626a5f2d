"""Mars terrain per-class ensemble segmenter.

An ensemble of compact one-vs-rest U-Nets (one per terrain class plus a
background detector) whose logit maps are fused into a 5-class mask.
"""
__version__ = "0.1.0"

#: Run-folder and checkpoint format version; bumped on incompatible changes.
FORMAT_VERSION = 1

#: The training settings a network's entry in a format-1 ``config.json`` may lack, with the values such a
#: network trained with: every key of ``members.config.TrainConfig`` but ``name``, as the dataclass defaulted
#: them when format 1 was defined. Frozen: a run resumes and reproduces from what its files say, so a key an
#: old file leaves out is read from here, never from today's defaults (``ensemble.train.recorded_config``).
TRAIN_CONFIG_V1_DEFAULTS = {
    "target": None,
    "model": {},
    "epochs": 10,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "patience": 4,
    "samples_per_epoch": 0,
    "val_tiles": 0,
    "sampler_weight": 1.0,
    "loss": "bce_dice",
    "pos_weight": None,
    "dice_weight": 1.0,
    "focal_gamma": 2.0,
    "objective": "competition",
    "augment": {"hflip": True, "rotate_degrees": 10.0, "zoom_min_scale": 0.8, "brightness": 0.0, "contrast": 0.0},
    "schedule": "cosine_epoch",
    "warmup_epochs": 0.0,
    "min_lr_ratio": 0.05,
    "ema_decay": 0.0,
    "snapshot_fractions": [],
    "replica": 0,
    "seed": 0,
    "seed_from_name": False,
    "distill": {},
    "init_from": {},
}
