"""Starting a network from trained weights (``--init-from RUN``): the source run and network found, checked (it
exists, its checksum, its architecture) before anything is written, recorded, and loaded when training starts.
The source is only read, never written (a shipped run included)."""
import dataclasses
from pathlib import Path

import torch

from ensemble.core.errors import EnsembleError, RunError
from ensemble.core.fileio import sha256_file
from ensemble.core.locations import resolve_run
from ensemble.core.runfolder import LATEST, RunFolder

from .checkpoint import load_checkpoint
from .unet import UNet, UNetConfig


def init_source(run, name):
    """``best.pt`` of network ``name`` in the run folder ``run``: where a network started from trained weights
    takes them."""
    return RunFolder(run).best_path(name)


def initial_weights(config):
    """The state dict a network with ``init_from`` starts from: its namesake's ``best.pt`` in the source run,
    refused (:class:`~ensemble.core.errors.RunError`) unless it still has the sha256 recorded when it was planned.
    Only the weights are taken; optimiser, schedule and epochs are the new network's own."""
    path = init_source(config.init_from["run"], config.name)
    if not path.is_file():
        raise RunError(f"{path}: not found; {config.name} was planned to start from it (init_from)")
    if sha256_file(path) != config.init_from["sha256"]:
        raise RunError(f"{path}: sha256 differs from the one recorded in init_from when {config.name} was planned; "
                       "the source run changed (use a new --run)")
    return load_checkpoint(path)["model"]


def init_run(source):
    """The run folder ``--init-from`` names (a folder, or a shipped run's name: :func:`resolve_run`'s rule), refused
    unless it holds a run."""
    path = Path(resolve_run(source))
    if not RunFolder(path).manifest_path.is_file():
        raise RunError(f"--init-from {source}: not a run folder (no {RunFolder(path).manifest_path.name})")
    return path


def describe_model(model, other=None):
    """A network's architecture in words (``a U-Net of width 18, depth 3, 5 outputs``), with every other
    architecture key that differs from ``other``'s."""
    config, other = UNetConfig.from_dict(model).to_dict(), UNetConfig.from_dict(other or model).to_dict()
    words = [f"a U-Net of width {config['width']}", f"depth {config['depth']}",
             f"{config['out_channels']} output{'s' if config['out_channels'] != 1 else ''}"]
    words += [f"{key} {config[key]}" for key in ("in_channels", "bottleneck", "upsample") if config[key] != other[key]]
    return ", ".join(words)


def _shapes(state):
    return {key: tuple(value.shape) for key, value in state.items()}


def check_init_source(source, name, model, *, shown):
    """The sha256 of ``best.pt`` of network ``name`` in the run folder ``source``, after checking that it exists,
    matches the run's recorded checksum and holds the architecture ``model`` (a U-Net config dict); ``shown`` is
    how errors name the source. Reads the source, never writes it."""
    folder = RunFolder(source)
    path = init_source(source, name)
    if not path.is_file():
        present = [n for n in sorted(folder.config()["networks"]) if folder.best_path(n).is_file()] \
            if folder.config_path.is_file() else []
        raise EnsembleError(f"{shown}: network {name} is not there (no {path}); it has "
                            f"{', '.join(present) or 'no trained network'}")
    folder.verify(path)
    state = load_checkpoint(path)
    with torch.device("meta"):  # shapes alone
        here = _shapes(UNet(UNetConfig.from_dict(model)).state_dict())
    if _shapes(state["model"]) != here:
        raise EnsembleError(f"{shown}: network {name} is {describe_model(state['model_config'], model)} there, "
                            f"{describe_model(model, state['model_config'])} here")
    return sha256_file(path)


def starting_weights(folder, configs, options, *, log=None):
    """``configs`` with their ``init_from`` (:data:`~members.config.INIT_FROM_KEYS`) settled: from
    ``options.init_from`` (a run folder or a shipped name) when given, else as the recipe file recorded it, each
    checked by :func:`check_init_source` before anything is written. A network already started (``latest.pt``)
    resumes from its own weights: it keeps the ``init_from`` it was planned with, and ``log`` hears that
    ``--init-from`` does not apply to it."""
    source = options.init_from
    source_path = init_run(source) if source else None
    out = []
    for config in configs:
        if (folder.network_dir(config.name) / LATEST).exists():
            recorded = folder.config()["networks"].get(config.name, {}) if folder.config_path.exists() else {}
            kept = recorded.get("init_from", {})
            if source and log and kept.get("run") != str(source_path.resolve()):
                log(f"{config.name} resumes from its latest.pt: --init-from {source} does not apply to it")
            out.append(dataclasses.replace(config, init_from=kept))
            continue
        if source_path is not None:
            run, shown, recorded = source_path.resolve(), f"--init-from {source}", None
        elif config.init_from:
            run, recorded = Path(config.init_from["run"]), config.init_from["sha256"]
            shown = f"--config {options.recipe.path}: networks.{config.name}.init_from {run}"
        else:
            out.append(config)
            continue
        digest = check_init_source(run, config.name, config.model, shown=shown)
        if recorded is not None and digest != recorded:
            raise EnsembleError(f"{shown}: {init_source(run, config.name)} has sha256 {digest[:12]}…, not the "
                                f"{recorded[:12]}… recorded; the source run changed since")
        out.append(dataclasses.replace(config, init_from={"run": str(run), "sha256": digest}))
    return out


def record_starting_weights(folder, configs):
    """Record in the manifest where each network that starts from trained weights takes them (``init_from``:
    network -> source run and sha256 of its ``best.pt``); a run without any keeps its manifest as it was."""
    started = {c.name: dict(c.init_from) for c in configs if c.init_from}
    if not started:
        return
    with folder.locked_manifest() as manifest:
        manifest.setdefault("init_from", {}).update(started)
