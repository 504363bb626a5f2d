"""Orchestrate training: build each network's config from a preset, prepare the run folder, train.

Members train in parallel (joblib); the baseline is the same U-Net with 5 outputs and a
width chosen so that its parameter count is within 15 % of the members' sum.
"""
import math
from dataclasses import dataclass

import numpy as np

from members.parallel import available_cores, train_parallel, train_stacked_tasks
from members.overrides import apply_overrides, parse_override
from members.presets import SAMPLER_WEIGHTS, get_preset
from members.training import TrainConfig, finished_metrics
from members.unet import UNet, UNetConfig, count_parameters

from .core.classes import BASELINE, CLASS_NAMES, NUM_CLASSES, class_index, is_baseline_like, is_control, is_multiclass
from .core.data import load_data
from .core.devices import resolve_device
from .core.errors import EnsembleError
from .core.objectives import DEFAULT_OBJECTIVE, check_objective
from .core.runfolder import RunFolder, prepare_run, record_network_config

PARAMETER_TOLERANCE = 0.15


def parse_members(spec):
    """``"all"`` or a comma list of class names -> list of class names in class order."""
    if spec in (None, "", "all"):
        return list(CLASS_NAMES)
    try:
        ids = sorted({class_index(part) for part in spec.split(",") if part.strip()})
    except ValueError as exc:
        raise EnsembleError(f"--members: {exc}") from None
    if not ids:
        raise EnsembleError(f"--members: no class named in {spec!r}; valid: all, {', '.join(CLASS_NAMES)}")
    return [CLASS_NAMES[i] for i in ids]


def model_config(width, depth, out_channels):
    """The U-Net config dict of a member (1 output) or the baseline (5 outputs)."""
    return UNetConfig(out_channels=out_channels, width=width, depth=depth).to_dict()


def members_parameter_count(width, depth):
    """Parameters of the five members together."""
    return NUM_CLASSES * count_parameters(UNet(UNetConfig.from_dict(model_config(width, depth, 1))))


def matched_baseline_width(member_width, depth):
    """The baseline width whose parameter count is closest to the five members' sum."""
    target = members_parameter_count(member_width, depth)
    widths = range(member_width, 8 * member_width + 1)
    counts = {w: count_parameters(UNet(UNetConfig.from_dict(model_config(w, depth, NUM_CLASSES)))) for w in widths}
    return min(counts, key=lambda w: abs(counts[w] - target))


def recorded_member_width(folder, preset_values):
    """The members' width recorded in the run's config, else the preset's."""
    if folder.config_path.exists():
        for name, config in folder.config()["networks"].items():
            if not is_multiclass(name):
                return config["model"]["width"]
    return preset_values["member_width"]


def run_settings(seed, val_fraction, objective=DEFAULT_OBJECTIVE, drop_outliers=True):
    """The run-level settings stored in the manifest."""
    try:
        check_objective(objective)
    except ValueError as exc:
        raise EnsembleError(f"--objective: {exc}") from None
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "objective": objective,
        "drop_outliers": drop_outliers,
    }


def parse_overrides(items):
    """``--set`` strings -> ``(scope, key, value)`` tuples; a malformed one is an :class:`EnsembleError`."""
    try:
        return [parse_override(item) for item in items or ()]
    except ValueError as exc:
        raise EnsembleError(f"--set {exc}") from None


def network_config(name, preset, settings, width, epochs, loss=None, samples_per_epoch=None, overrides=()):
    """The :class:`TrainConfig` of one network from a preset dict, options and ``--set`` overrides.

    The preset's ``recipe`` overrides apply first, then ``overrides`` (:mod:`members.overrides`).
    """
    is_member = not is_multiclass(name)
    config = TrainConfig(
        name=name,
        target=class_index(name) if is_member else None,
        replica=int(name.rpartition("_")[2]) if is_control(name) else 0,
        model=model_config(width, preset["depth"], 1 if is_member else NUM_CLASSES),
        epochs=epochs or preset["epochs"],
        batch_size=preset["batch_size"],
        lr=preset["lr"],
        patience=preset["patience"],
        samples_per_epoch=preset["samples_per_epoch"] if samples_per_epoch is None else samples_per_epoch,
        val_tiles=preset["val_tiles"],
        sampler_weight=SAMPLER_WEIGHTS.get(name, 1.0) if is_member else 1.0,
        loss=loss or ("bce_dice" if is_member else "ce"),
        objective=settings["objective"],
        seed=settings["seed"],
        seed_from_name=is_multiclass(name) and name != BASELINE,
    )
    recipe = [parse_override(item) for item in preset.get("recipe", ())]
    try:
        return TrainConfig(**apply_overrides(config.to_dict(), name, recipe + list(overrides))).check()
    except ValueError as exc:
        raise EnsembleError(f"--set {exc}") from None


@dataclass
class TrainingPlan:
    """What :func:`plan_training` decided: the run folder (prepared), one task per network, and the split."""

    folder: RunFolder
    names: list
    tasks: list
    train_idx: np.ndarray
    val_idx: np.ndarray
    objective: str
    preset: str
    scored_tiles: int


def _check_tile_size(data, depth):
    step = 2 ** depth
    if data.tile_shape[0] % step or data.tile_shape[1] % step:
        height, width = data.tile_shape
        raise EnsembleError(
            f"{data.path}: tiles are {height}x{width}, but the U-Nets need sizes divisible by "
            f"2**depth = {step}; crop or pad the tiles"
        )


def check_distinct_seeds(folder, configs):
    """Refuse to plan a network whose seed another network of the run (planned or recorded) already has.

    Two networks of one run with the same seed, architecture and data would train into the same
    weights, and an average of them would be no ensemble at all.
    """
    recorded = folder.config()["networks"] if folder.config_path.exists() else {}
    seeds = {name: TrainConfig(**{**TrainConfig(name=name).to_dict(), **config}).network_seed()
             for name, config in recorded.items()}
    seeds.update({config.name: config.network_seed() for config in configs})
    for config in configs:
        twins = sorted(name for name, seed in seeds.items() if seed == seeds[config.name] and name != config.name)
        if twins:
            raise EnsembleError(f"{folder.config_path}: {config.name} would train with the seed of "
                                f"{', '.join(twins)} ({seeds[config.name]}); use a new --run")


def plan_training(names, data, run, preset="quick", epochs=None, width=None, device="cpu", seed=0,
                  val_fraction=0.15, objective=None, loss=None, samples_per_epoch=None, quiet=False, overrides=()):
    """Prepare ``run`` (manifest, split, every network's config) and return a :class:`TrainingPlan`.

    ``data`` is a loaded :class:`~ensemble.core.data.MarsData`; workers get its path and sha256.
    """
    preset_values = get_preset(preset)
    _check_tile_size(data, preset_values["depth"])
    folder = RunFolder(run)
    if objective is None:  # an existing run keeps its objective; a new one gets the default
        objective = folder.objective() if folder.manifest_path.exists() else DEFAULT_OBJECTIVE
    settings = run_settings(seed, val_fraction, objective)
    overrides = parse_overrides(overrides)
    configs = []  # built before anything is written, so a bad --set leaves no trace
    for name in names:
        if is_baseline_like(name):
            net_width = width or matched_baseline_width(recorded_member_width(folder, preset_values), preset_values["depth"])
        elif is_control(name):  # the control spends the members' parameters on multiclass nets of their width
            net_width = width or recorded_member_width(folder, preset_values)
        else:
            net_width = width or preset_values["member_width"]
        configs.append(network_config(name, preset_values, settings, net_width, epochs, loss, samples_per_epoch,
                                      overrides))
    check_distinct_seeds(folder, configs)
    _, train_idx, val_idx = prepare_run(run, data, settings)
    tasks = []
    for name, config in zip(names, configs):
        record_network_config(run, settings, name, config.to_dict(), defaults=TrainConfig(name=name).to_dict())
        tasks.append({
            "config_dict": config.to_dict(),
            "data_path": str(data.path),
            "data_sha256": data.sha256,
            "train_idx": train_idx,
            "val_idx": val_idx,
            "out_dir": str(folder.network_dir(name)),
            "device": device,
            "quiet": quiet,
        })
    scored = min(preset_values["val_tiles"] or len(val_idx), len(val_idx))
    return TrainingPlan(folder, list(names), tasks, train_idx, val_idx, objective, preset, scored)


def dispatch(plan, jobs=1, backend="loky", scheduler=None, stacked=False):
    """Train the plan's tasks (joblib workers, or stacked in this process); record the finished checksums."""
    if stacked:
        results = train_stacked_tasks(plan.tasks)
    else:
        results = train_parallel(plan.tasks, jobs=jobs, backend=backend, scheduler=scheduler)
    folder = plan.folder
    finished = [path for r in results if r.get("finished")
                for path in [folder.best_path(r["name"]), *(folder.snapshot_path(r["name"], e)
                                                           for e in folder.snapshot_epochs(r["name"]))]]
    recorded = folder.manifest().get("checksums", {})
    missing = [p for p in finished if p.relative_to(folder.path).as_posix() not in recorded]
    if missing:
        folder.record_checksums(missing)
    return results


def default_jobs(names, stacked=False):
    """Networks trained at once when ``--jobs`` is not given: every core busy in every round.

    Up to one network per core; with more networks than cores, they train in ``n // cores``
    rounds of ``ceil(n / rounds)`` networks at once, so no round leaves a core idle (a last
    round of fewer networks than cores gains little from the spare threads). The five members
    on 2 cores: 3 at once, then 2, one thread each, measured faster than 2, 2 and 1 (README,
    Speed: one epoch of all training tiles 227.6 against 236.9 s).
    """
    if stacked:
        return 1
    n, cores = max(1, len(names)), available_cores()
    if n <= cores:
        return n
    return math.ceil(n / (n // cores))


def train_networks(names, data=None, run="runs/default", preset="quick", epochs=None, width=None, jobs=None,
                   backend="loky", scheduler=None, device="auto", seed=0, val_fraction=0.15, objective=None,
                   loss=None, samples_per_epoch=None, stacked=False, quiet=False, log=print, overrides=()):
    """Train the named networks (class names and/or ``"baseline"``) into ``run``; return their metrics.

    :func:`plan_training` then :func:`dispatch`. ``objective`` (:mod:`ensemble.core.objectives`)
    is fixed when the run is created; ``None`` keeps an existing run's and gives a new one
    ``competition``. ``jobs`` networks train at once (default :func:`default_jobs`: every
    core busy in every round). ``stacked=True`` trains the named members together as one grouped network in this
    process (:mod:`members.stacked_training`) instead of one joblib task per network.
    """
    if stacked and any(is_multiclass(name) for name in names):
        raise EnsembleError("--stacked trains one-vs-rest members only; the baseline trains with: ensemble baseline")
    if stacked and ((jobs or 1) > 1 or backend != "loky"):
        raise EnsembleError("--stacked trains all members in one process on every core; leave out --jobs and --backend")
    device = resolve_device(device)  # refuse an unavailable device before anything is written
    plan = plan_training(names, load_data(data), run, preset, epochs, width, device, seed, val_fraction, objective,
                         loss, samples_per_epoch, quiet, overrides)
    # finished networks are skipped at once, so only the others count for the layout
    jobs = jobs or default_jobs([n for n in names if finished_metrics(plan.folder.network_dir(n)) is None] or names,
                                stacked)
    if not quiet:
        how = "stacked in one process" if stacked else f"{jobs} job(s)"
        log(f"training {', '.join(names)} on {len(plan.train_idx)} tiles, validating on {plan.scored_tiles} of "
            f"{len(plan.val_idx)} validation tiles each epoch "
            f"({preset} preset, objective {plan.objective}, {how}, device {device})")
    return dispatch(plan, jobs, backend, scheduler, stacked)
