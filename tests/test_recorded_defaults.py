"""One home for each training default, and old runs read as they were trained.

``TrainConfig``'s defaults are the recipe the presets train, so a preset holds only what differs; a
``config.json`` entry that lacks a key is completed from the frozen table beside the format version
(``ensemble.TRAIN_CONFIG_V1_DEFAULTS``), never from today's defaults, so the shipped runs load to the
configs they were trained with.
"""
import dataclasses
import hashlib
import json

import pytest

import ensemble
from ensemble.core.locations import shipped_root
from ensemble.core.runfolder import RunFolder
from ensemble.recipe import TrainOptions
from ensemble.train import network_config, recorded_config
from members.config import TrainConfig
from members.presets import PRESETS

#: What TrainConfig and AugmentConfig defaulted to while format 1 runs were written without some keys,
#: field by field (the dataclasses' defaults then: per-epoch cosine to 0.05 lr, patience 4, rotation
#: 10 degrees, zoom 0.8).
FORMAT_1_DEFAULTS = {
    "target": None, "model": {}, "epochs": 10, "batch_size": 32, "lr": 0.002, "weight_decay": 0.0001,
    "patience": 4, "samples_per_epoch": 0, "val_tiles": 0, "sampler_weight": 1.0, "loss": "bce_dice",
    "pos_weight": None, "dice_weight": 1.0, "focal_gamma": 2.0, "objective": "competition",
    "augment": {"hflip": True, "rotate_degrees": 10.0, "zoom_min_scale": 0.8, "brightness": 0.0, "contrast": 0.0},
    "schedule": "cosine_epoch", "warmup_epochs": 0.0, "min_lr_ratio": 0.05, "ema_decay": 0.0,
    "snapshot_fractions": [], "replica": 0, "seed": 0, "seed_from_name": False,
}

#: Every shipped network: (the first 16 hex digits of the sha256 of its training config as the code before
#: the frozen table loaded it, as sorted JSON; its network seed).
SHIPPED = {
    "fullmask/background": ("453b7fa5d342f44c", 0),
    "fullmask/baseline": ("92deb6922e5114cf", 5),
    "fullmask/bedrock": ("70802b3d370473ad", 2),
    "fullmask/big_rock": ("16ec85dbb265cae8", 4),
    "fullmask/sand": ("2d627806d700d510", 3),
    "fullmask/soil": ("ca6a9d3ac28e83a1", 1),
    "reference/background": ("31accadda457c014", 0),
    "reference/baseline": ("7b3dd08c02e9d1eb", 5),
    "reference/baseline_1": ("5210c2db9ce602eb", 284806612),
    "reference/bedrock": ("d7ae5f0e5c86561b", 2),
    "reference/big_rock": ("00a00725d4817131", 4),
    "reference/control_0": ("fde9b23d67bf93e0", 722418089),
    "reference/control_1": ("ef0e9fce34f841be", 170459898),
    "reference/control_2": ("e1653ce1de25988c", 1182902253),
    "reference/control_3": ("8bcc85c4d32ecb8e", 505031629),
    "reference/control_4": ("908a7d91e122b767", 667843329),
    "reference/sand": ("eb2fb1945612ad75", 3),
    "reference/soil": ("d71e21cf484e6fe0", 1),
}


def _digest(config):
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def test_the_frozen_table_is_the_format_1_defaults_field_by_field():
    table = ensemble.TRAIN_CONFIG_V1_DEFAULTS
    assert set(table) == {f.name for f in dataclasses.fields(TrainConfig)} - {"name"}
    for key, value in FORMAT_1_DEFAULTS.items():
        assert table[key] == value and type(table[key]) is type(value), key


def _shipped_networks():
    for run in sorted(p for p in shipped_root().iterdir() if (p / "config.json").is_file()):
        for name, config in RunFolder(run).config()["networks"].items():
            yield f"{run.name}/{name}", name, config


def test_every_shipped_network_loads_to_the_config_it_was_trained_with():
    seen = set()
    for key, name, entry in _shipped_networks():
        config = recorded_config(name, entry)
        assert (_digest(config), config.network_seed()) == SHIPPED[key], key
        seen.add(key)
    assert seen == set(SHIPPED)


def test_a_shipped_run_written_without_the_recipe_keys_keeps_its_recipe():
    """The fullmask run's config.json predates the schedule keys: it trained the per-epoch cosine, whatever the
    defaults are now."""
    keys = ("schedule", "warmup_epochs", "min_lr_ratio")
    for key, name, entry in _shipped_networks():
        if key.startswith("fullmask/"):
            assert not set(keys) & set(entry)
            config = recorded_config(name, entry)
            assert (config.schedule, config.warmup_epochs, config.min_lr_ratio) == ("cosine_epoch", 0.0, 0.05)
            assert TrainConfig(name=name).schedule != config.schedule  # so today's defaults would misread it


def test_the_defaults_are_the_recipe_and_presets_hold_only_what_differs():
    defaults = TrainConfig(name="soil").to_dict()
    assert (defaults["schedule"], defaults["warmup_epochs"], defaults["min_lr_ratio"], defaults["patience"]) == \
        ("cosine", 0.25, 0.0, 0)
    assert defaults["augment"] == {"hflip": True, "rotate_degrees": 0.0, "zoom_min_scale": 1.0, "brightness": 0.0,
                                   "contrast": 0.0, "degrade": 0.6, "degrade_strength": 0.7}
    for preset, fields in PRESETS.items():
        assert set(fields) <= set(defaults), preset
        assert all(fields[k] != defaults[k] for k in fields), preset  # a value equal to the default is noise
        config = network_config("soil", settings={"objective": "competition", "seed": 0}, width=8,
                                options=TrainOptions(preset=preset)).to_dict()
        assert {k: v for k, v in config.items() if k not in fields and k not in ("model", "target")} == \
            {k: v for k, v in defaults.items() if k not in fields and k not in ("model", "target")}


@pytest.mark.parametrize("key", ["schedule", "augment", "patience"])
def test_an_old_entry_without_a_key_is_completed_from_the_table_not_the_defaults(tmp_path, key):
    from ensemble.core.errors import RunError
    from ensemble.core.runfolder import LATEST
    from ensemble.core.runsetup import record_network_config
    from ensemble.train import recorded_defaults

    run = tmp_path / "run"
    config = network_config("soil", settings={"objective": "competition", "seed": 0}, width=4,
                            options=TrainOptions(epochs=1)).to_dict()
    old = {k: v for k, v in config.items() if k != key}  # written before the key existed
    record_network_config(run, {"seed": 0}, "soil", old)
    (RunFolder(run).network_dir("soil")).mkdir(parents=True)
    (RunFolder(run).network_dir("soil") / LATEST).write_bytes(b"started")
    with pytest.raises(RunError, match=f"soil was started with other settings \\({key}\\)"):
        record_network_config(run, {"seed": 0}, "soil", config, defaults=recorded_defaults())
    record_network_config(run, {"seed": 0}, "soil", {**config, key: FORMAT_1_DEFAULTS[key]},
                          defaults=recorded_defaults())  # what it trained with: continues
