"""Creating and continuing a run folder: the manifest written once (data hash, split, versions, seed), the same
settings required of every later command, and each network's training config recorded (``config.json``)."""
import platform
import time
from pathlib import Path

import numpy as np

from ensemble import FORMAT_VERSION, __version__

from .classes import CLASS_NAMES
from .errors import RunError
from .fileio import write_json_atomic
from .outliers import find_outliers
from .runfolder import LATEST, RUN_KEYS, RunFolder
from .split import split_indices


def _version_of(package):
    """``package.__version__``, read from the package's ``version.py`` when it is not imported yet, so recording
    it does not load the package (torchvision's import loads its operators, which training never uses)."""
    import ast
    import importlib
    import importlib.util
    import sys

    if package not in sys.modules:
        try:
            folder = importlib.util.find_spec(package).submodule_search_locations[0]
            for node in ast.parse((Path(folder) / "version.py").read_text()).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
                    return str(ast.literal_eval(node.value))
        except (AttributeError, ImportError, IndexError, OSError, SyntaxError, TypeError, ValueError):
            pass
    return importlib.import_module(package).__version__


def package_versions():
    """Versions of the packages that shape results."""
    import joblib
    import torch

    return {
        "mars-ensemble": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version_of("torchvision"),
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def make_split(data, settings):
    """Train/validation tile indices for ``data`` under run ``settings``, outliers dropped if asked."""
    train_idx, val_idx = split_indices(len(data), data.groups, settings["val_fraction"], settings["seed"])
    dropped = np.zeros(0, dtype=np.int64)
    if settings.get("drop_outliers", True):
        dropped = find_outliers(data.images, data.masks).indices
        train_idx, val_idx = np.setdiff1d(train_idx, dropped), np.setdiff1d(val_idx, dropped)
    return train_idx, val_idx, dropped


def prepare_run(run, data, settings):
    """Create the run folder for ``data`` or check an existing one; return ``(manifest, train_idx, val_idx)``.

    An existing run must have been made from the same data file (sha256) and the same
    run settings (:data:`RUN_KEYS`); otherwise :class:`RunError` names the mismatch.
    """
    folder = RunFolder(run)
    folder.check_writable("train")
    settings = {k: settings[k] for k in RUN_KEYS}
    if folder.manifest_path.exists():
        manifest = folder.manifest()
        if manifest["data"]["sha256"] != data.sha256:
            raise RunError(
                f"{folder.manifest_path}: run was made from data sha256 {manifest['data']['sha256'][:12]}… "
                f"({manifest['data']['file']}), but {data.path} has {data.sha256[:12]}…; use a new --run"
            )
        differing = [k for k in RUN_KEYS if manifest["settings"].get(k) != settings[k]]
        if differing:
            detail = ", ".join(f"{k}={manifest['settings'].get(k)!r} (asked {settings[k]!r})" for k in differing)
            raise RunError(f"{folder.manifest_path}: run was made with {detail}; use a new --run")
        return manifest, np.asarray(manifest["split"]["train_indices"]), np.asarray(manifest["split"]["val_indices"])
    train_idx, val_idx, dropped = make_split(data, settings)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "classes": list(CLASS_NAMES),
        "data": {
            "file": data.path.name,
            "sha256": data.sha256,
            "tiles": len(data),
            "tile_shape": list(data.tile_shape),
        },
        "settings": settings,
        "split": {
            "method": "group" if data.groups is not None else "tile",
            "val_groups": [] if data.groups is None else sorted(int(g) for g in np.unique(data.groups[val_idx])),
            "train_indices": [int(i) for i in train_idx],
            "val_indices": [int(i) for i in val_idx],
            "outliers_dropped": [int(i) for i in dropped],
        },
        "versions": package_versions(),
    }
    write_json_atomic(folder.manifest_path, manifest)
    return manifest, train_idx, val_idx


def record_network_config(run, settings, name, config_dict, defaults=None):
    """Store a network's training config in ``config.json``; refuse a different one for a started network.

    ``defaults`` fill the keys either config leaves out (one recorded by an older version, a key recorded only
    when set) before the comparison.
    """
    folder = RunFolder(run)
    config = folder.config() if folder.config_path.exists() else {"settings": settings, "networks": {}}
    old, new = config["networks"].get(name), config_dict
    if old is not None and defaults:
        old, new = {**defaults, **old}, {**defaults, **config_dict}
    started = (folder.network_dir(name) / LATEST).exists()
    if old is not None and old != new and started:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise RunError(
            f"{folder.config_path}: {name} was started with other settings ({', '.join(keys)}); "
            "rerun with the same options to continue, or use a new --run"
        )
    config["networks"][name] = config_dict
    write_json_atomic(folder.config_path, config)
