"""The run folder: ``config.json``, ``manifest.json`` (data hash, split, versions, seed) and the networks.

Layout::

    RUN/config.json                   run settings and every network's training config
    RUN/manifest.json                 format version, data file hash, split, package versions, seed
    RUN/members/<class>/{best.pt,latest.pt,metrics.json}
    RUN/baseline/{best.pt,latest.pt,metrics.json}
    RUN/cache/                        cached member logits for fusion
    RUN/fusion/<strategy>.pt          fitted fusers
"""
import contextlib
import fcntl
import json
import platform
import time
from pathlib import Path

import numpy as np

from . import FORMAT_VERSION, __version__
from .classes import CLASS_NAMES
from .errors import RunError
from .fileio import sha256_file, write_json_atomic
from .objectives import OBJECTIVES
from .outliers import find_outliers
from .split import split_indices

#: Settings that fix the split and the meaning of the networks; a run folder keeps them for life.
RUN_KEYS = ("seed", "val_fraction", "objective", "drop_outliers")


class RunFolder:
    """Paths and JSON files of one run folder."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def config_path(self):
        """``RUN/config.json``."""
        return self.path / "config.json"

    @property
    def manifest_path(self):
        """``RUN/manifest.json``."""
        return self.path / "manifest.json"

    def network_dir(self, name):
        """Folder of a member (by class name) or of ``"baseline"``."""
        return self.path / "baseline" if name == "baseline" else self.path / "members" / name

    @property
    def cache_dir(self):
        """``RUN/cache``."""
        return self.path / "cache"

    @property
    def fusion_dir(self):
        """``RUN/fusion``."""
        return self.path / "fusion"

    def read_json(self, path):
        """Read a JSON file of the run; a missing or broken file raises :class:`RunError`."""
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: not found; is {self.path} a run folder?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from None

    def manifest(self):
        """The manifest dict, checked for a readable format version."""
        manifest = self.read_json(self.manifest_path)
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RunError(
                f"{self.manifest_path}: format version {version!r} is not readable by this tool "
                f"(reads up to {FORMAT_VERSION}); upgrade the package"
            )
        return manifest

    def objective(self):
        """The run's objective (:mod:`ensemble.objectives`), recorded in the manifest at ``train`` time."""
        objective = self.manifest()["settings"].get("objective")
        if objective not in OBJECTIVES:
            raise RunError(f"{self.manifest_path}: settings.objective is {objective!r}; expected one of "
                           f"{', '.join(OBJECTIVES)}")
        return objective

    def config(self):
        """The config dict."""
        return self.read_json(self.config_path)

    @contextlib.contextmanager
    def locked_manifest(self):
        """Yield the manifest dict under an exclusive lock; it is written back (atomically) on exit."""
        with open(self.path / ".manifest.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                manifest = self.manifest()
                yield manifest
                write_json_atomic(self.manifest_path, manifest)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record_checksums(self, paths):
        """Record the sha256 of each file in ``paths`` in the manifest, keyed by its path inside the run."""
        with self.locked_manifest() as manifest:
            checksums = manifest.setdefault("checksums", {})
            for path in paths:
                checksums[Path(path).relative_to(self.path).as_posix()] = sha256_file(path)

    def checksum_required(self, path):
        """True when the run must hold a checksum for ``path``.

        That is a fitted fuser ``fusion/<strategy>.pt`` (recorded when it is saved) and the
        ``best.pt`` of a finished network (its ``metrics.json`` says finished; recorded when
        training ends). Other files, such as the checkpoints of a network still training, need none.
        """
        path = Path(path)
        if path.parent == self.fusion_dir and path.suffix == ".pt":
            return True
        metrics_path = path.parent / "metrics.json"
        if path.name != "best.pt" or not metrics_path.exists():
            return False
        metrics = self.read_json(metrics_path)
        return isinstance(metrics, dict) and bool(metrics.get("finished"))

    def verify(self, path):
        """Check ``path`` against the sha256 the manifest recorded for it; a mismatch raises :class:`RunError`.

        A file the run must hold a checksum for (:meth:`checksum_required`) whose entry is
        missing is refused too. Other files without an entry (not yet finished) pass.
        """
        key = Path(path).relative_to(self.path).as_posix()
        expected = self.manifest().get("checksums", {}).get(key)
        if expected is None:
            if self.checksum_required(path):
                raise RunError(
                    f"{path}: no sha256 recorded for it in {self.manifest_path}, so it cannot be verified; "
                    "the manifest was edited or replaced, or the file was copied in (retrain or refit it)"
                )
        elif sha256_file(path) != expected:
            raise RunError(
                f"{path}: sha256 differs from the one recorded in {self.manifest_path} when it was written; "
                "the file is corrupted or was replaced (retrain it, or restore the original)"
            )
        return path


def package_versions():
    """Versions of the packages that shape results."""
    import joblib
    import torch
    import torchvision

    return {
        "mars-ensemble": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
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


def record_network_config(run, settings, name, config_dict):
    """Store a network's training config in ``config.json``; refuse a different one for a started network."""
    folder = RunFolder(run)
    config = folder.config() if folder.config_path.exists() else {"settings": settings, "networks": {}}
    old = config["networks"].get(name)
    started = (folder.network_dir(name) / "latest.pt").exists()
    if old is not None and old != config_dict and started:
        keys = sorted(k for k in set(old) | set(config_dict) if old.get(k) != config_dict.get(k))
        raise RunError(
            f"{folder.config_path}: {name} was started with other settings ({', '.join(keys)}); "
            "rerun with the same options to continue, or use a new --run"
        )
    config["networks"][name] = config_dict
    write_json_atomic(folder.config_path, config)
