"""Orchestrate training: build each network's config from a preset, prepare the run folder, train.

One :class:`TrainOptions` says how a command trains; :func:`plan_training` turns it and the names of
the networks (members, the baseline and its replicas, the control's nets, in any mix) into one
:class:`TrainingPlan` of independent tasks, and :func:`dispatch` trains them all together: joblib
workers on this machine, a Dask cluster, or the members stacked in this process. The baseline is
the same U-Net with 5 outputs and a width chosen so that its parameter count is within 15 % of the
members' sum.
"""
import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ensemble import TRAIN_CONFIG_V1_DEFAULTS
from members.config import DISTILL_DEFAULTS, TrainConfig
from members.overrides import apply_overrides, parse_override
from members.parallel import TrainTask, train_parallel, train_stacked_tasks
from members.presets import SAMPLER_WEIGHTS, get_preset
from members.training import finished_metrics
from members.unet import UNetConfig, matched_baseline_width, model_config, parameter_count
from members.warmstart import record_starting_weights, starting_weights
from members.workers import start_server, will_use_workers

from .core.classes import BASELINE, NUM_CLASSES, STUDENT, class_index, is_baseline_like, is_control, is_multiclass
from .core.data import load_data
from .core.defaults import DEFAULT_BACKEND
from .core.devices import machine_cores, resolve_device
from .core.errors import EnsembleError, RunError
from .core.imagestats import training_statistics
from .core.logs import ACTIVE_LOG_FILE, line_logger
from .core.objectives import DEFAULT_OBJECTIVE, check_objective
from .core.runfolder import RunFolder
from .core.runsetup import prepare_run, record_network_config
from .recipe import TrainOptions
from .reporting.progress import TrainingWatch, check_tensorboard

PARAMETER_TOLERANCE = 0.15
#: The members' width and the U-Nets' depth when no option says otherwise: :class:`UNetConfig`'s.
MEMBER_WIDTH = UNetConfig.width
DEPTH = UNetConfig.depth


def recorded_member_width(folder):
    """The members' width recorded in the run's config, else :data:`MEMBER_WIDTH`."""
    if folder.config_path.exists():
        for name, config in folder.config()["networks"].items():
            if not is_multiclass(name):
                return config["model"]["width"]
    return MEMBER_WIDTH


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


def recorded_defaults():
    """The values of the training settings a recorded config lacks (:data:`ensemble.TRAIN_CONFIG_V1_DEFAULTS`)."""
    return copy.deepcopy(TRAIN_CONFIG_V1_DEFAULTS)


def recorded_config(name, config):
    """The :class:`TrainConfig` a network of a run was trained with, from its entry in ``config.json``.

    Keys an older file lacks are the values networks trained with when the file was written
    (:func:`recorded_defaults`), not today's defaults, so an old run resumes and reproduces exactly.
    """
    return TrainConfig(**{**recorded_defaults(), "name": name, **config})


def _layered(values, name, options):
    """A network's config dict ``values`` (defaults and preset) with the recipe file's settings for it, then
    ``--set``'s (:mod:`members.overrides`)."""
    if options.recipe is not None:
        values = options.recipe.apply(values, name)
    try:
        return apply_overrides(values, name, parse_overrides(options.overrides))
    except ValueError as exc:
        raise EnsembleError(f"--set {exc}") from None


def network_config(name, *, settings, width, options):
    """The :class:`TrainConfig` of one network, in layers, each over the one before: :class:`TrainConfig`'s
    defaults (the recipe), the preset's fields, the recipe file (``--config``, :mod:`ensemble.recipe`), the
    ``--set`` overrides (:mod:`members.overrides`), then the options given explicitly (epochs, samples per
    epoch, loss, width, the student's distill settings).

    ``settings`` are the run's (:func:`run_settings`: objective and seed); ``width`` is the network's, from
    ``options.width`` when that is given (:func:`network_widths`).
    """
    is_member = not is_multiclass(name)
    values = TrainConfig(
        name=name,
        target=class_index(name) if is_member else None,
        replica=int(name.rpartition("_")[2]) if is_control(name) else 0,
        model=model_config(width, DEPTH, 1 if is_member else NUM_CLASSES),
        sampler_weight=SAMPLER_WEIGHTS.get(name, 1.0) if is_member else 1.0,
        loss="bce_dice" if is_member else "ce",
        objective=settings["objective"],
        seed=settings["seed"],
        seed_from_name=is_multiclass(name) and name != BASELINE,
    ).to_dict()
    if name == STUDENT:
        values["distill"] = dict(DISTILL_DEFAULTS)
    values.update(get_preset(options.preset))
    values = _layered(values, name, options)
    if options.epochs:
        values["epochs"] = options.epochs
    if options.samples_per_epoch is not None:
        values["samples_per_epoch"] = options.samples_per_epoch
    if options.loss:
        values["loss"] = options.loss
    if options.width:
        values["model"] = {**values["model"], "width": width}
    if name == STUDENT:
        values["distill"] = {**values["distill"], **dict(options.distill)}
    try:
        return TrainConfig(**values).check()
    except ValueError as exc:
        where = "--set" if options.overrides or options.recipe is None else f"--config {options.recipe.path}:"
        raise EnsembleError(f"{where} {exc}") from None


def planned_teacher(options):
    """The teacher the recipe file or ``--set`` give the student (``distill.teacher``), or ``None``."""
    values = {**TrainConfig(name=STUDENT, model=model_config(MEMBER_WIDTH, DEPTH, NUM_CLASSES)).to_dict(),
              "distill": dict(DISTILL_DEFAULTS)}
    return _layered(values, STUDENT, options)["distill"].get("teacher")


@dataclass
class TrainingPlan:
    """What :func:`plan_training` decided: the run folder (prepared), one task per network, and the split."""

    folder: RunFolder
    names: list
    tasks: list  # TrainTask, one per name
    train_idx: np.ndarray
    val_idx: np.ndarray
    objective: str
    options: TrainOptions
    scored_tiles: int

    @property
    def preset(self):
        """The preset's name."""
        return self.options.preset


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
    seeds = {name: recorded_config(name, config).network_seed() for name, config in recorded.items()}
    seeds.update({config.name: config.network_seed() for config in configs})
    for config in configs:
        twins = sorted(name for name, seed in seeds.items() if seed == seeds[config.name] and name != config.name)
        if twins:
            raise EnsembleError(f"{folder.config_path}: {config.name} would train with the seed of "
                                f"{', '.join(twins)} ({seeds[config.name]}); use a new --run")


def network_widths(names, folder, options):
    """Each named network's width: the members at ``options.width`` (else :data:`MEMBER_WIDTH`); the baseline and
    its replicas matched to the members' parameters, the control at the members' width, where the members are
    those of the plan, else the run's recorded ones. A plan without members gives ``options.width`` to its own
    networks."""
    with_members = any(not is_multiclass(name) for name in names)
    member_width = (options.width or MEMBER_WIDTH) if with_members else recorded_member_width(folder)
    own = None if with_members else options.width
    widths = {}
    for name in names:
        if is_baseline_like(name) or name == STUDENT:  # the student: the baseline's architecture and width
            widths[name] = own or matched_baseline_width(member_width, DEPTH)
        elif is_control(name):  # the control spends the members' parameters on multiclass nets of their width
            widths[name] = own or member_width
        else:
            widths[name] = options.width or MEMBER_WIDTH
    return widths


def plan_training(names, *, data, run, options, log=None):
    """Prepare ``run`` (manifest, split, every network's config) and return a :class:`TrainingPlan`.

    ``data`` is a loaded :class:`~ensemble.core.data.MarsData`; ``options`` a :class:`TrainOptions`
    (its ``device`` already resolved). Every config is built and checked before anything is written,
    so a bad ``--set``, recipe file or ``--init-from`` leaves no trace. ``log`` hears of an ``--init-from``
    that a network already started does not take.
    """
    _check_tile_size(data, DEPTH)
    folder = RunFolder(run)
    objective = options.objective
    if objective is None:  # an existing run keeps its objective; a new one gets the default
        objective = folder.objective() if folder.manifest_path.exists() else DEFAULT_OBJECTIVE
    settings = run_settings(options.seed, options.val_fraction, objective, options.drop_outliers)
    widths = network_widths(names, folder, options)
    configs = [network_config(name, settings=settings, width=widths[name], options=options) for name in names]
    configs = starting_weights(folder, configs, options, log=log)
    check_distinct_seeds(folder, configs)
    check_recipe_settings(folder, options)
    _, train_idx, val_idx = prepare_run(run, data, settings)
    record_input_statistics(folder, data, train_idx)
    record_starting_weights(folder, configs)
    tasks = []
    watch = TrainingWatch(folder.path, tensorboard=options.tensorboard)
    for name, config in zip(names, configs):
        record_network_config(run, settings, name, config.to_dict(), defaults=recorded_defaults())
        tasks.append(TrainTask(config=config.to_dict(), out_dir=str(folder.network_dir(name)),
                               data_path=str(data.path), data_sha256=data.sha256, train_idx=train_idx,
                               val_idx=val_idx, device=options.device, quiet=options.quiet, on_epoch=watch,
                               log_file=ACTIVE_LOG_FILE.get()))
    scored = min(configs[0].val_tiles or len(val_idx), len(val_idx)) if configs else len(val_idx)
    return TrainingPlan(folder, list(names), tasks, train_idx, val_idx, objective, options, scored)


def check_recipe_settings(folder, options):
    """Refuse a recipe file whose run settings differ from those an existing run was made with, naming the file
    (the rule ``prepare_run`` applies to ``--seed``, ``--val-fraction`` and ``--objective``)."""
    recipe = options.recipe
    if recipe is None or not folder.manifest_path.exists():
        return
    recorded = folder.manifest()["settings"]
    for key, value in recipe.settings.items():
        if getattr(options, key) == value and key in recorded and recorded[key] != value:
            raise RunError(f"{folder.manifest_path}: run was made with {key}={recorded[key]!r}, but --config "
                           f"{recipe.path} asks {value!r} (settings.{key}); use a new --run")


def attach_teachers(plan, data, *, log=None):
    """Give every unfinished distilled task of ``plan`` its teacher's logits of the training tiles, and of its
    unlabeled tiles after them (cached once, :mod:`ensemble.distill`), in place."""
    from .distill import teacher_logits_file, unlabeled_tiles_path

    for i, task in enumerate(plan.tasks):
        config = TrainConfig(**task.config)
        teacher = config.distill_settings()[0]
        if teacher is None or finished_metrics(task.out_dir) is not None:
            continue
        images, unlabeled = data.images[plan.train_idx], config.distill.get("unlabeled")
        extra = {}
        if unlabeled:
            extra["unlabeled_path"] = str(unlabeled_tiles_path(unlabeled))
            images = np.concatenate([images, np.load(extra["unlabeled_path"])])
        path = teacher_logits_file(plan.folder, teacher, images, data.sha256, plan.train_idx,
                                   extra_key=unlabeled["sha256"] if unlabeled else "", log=log)
        plan.tasks[i] = dataclasses.replace(task, teacher_path=str(path), **extra)


def record_input_statistics(folder, data, train_idx):
    """Write the training tiles' image statistics (``RUN/input_stats.json``) that ``predict`` checks its inputs
    against, unless the run has them: the split is fixed for the run's life, and so are they."""
    if not folder.input_stats_path.exists():
        folder.write_input_stats(training_statistics(data.images, data.tile_shape, train_idx))


def default_jobs(names, *, stacked=False):
    """Networks trained at once when ``--jobs`` is not given: every core busy in every round.

    Up to one network per core; with more networks than cores, they train in ``n // cores``
    rounds of ``ceil(n / rounds)`` networks at once, so no round leaves a core idle (a last
    round of fewer networks than cores gains little from the spare threads; docs/performance.md
    compares the layouts).
    """
    if stacked:
        return 1
    n, cores = max(1, len(names)), machine_cores()
    if n <= cores:
        return n
    return math.ceil(n / (n // cores))


def _parts(plan):
    """The plan's tasks as ``(stacked members, dispatched tasks)``: with ``stacked`` the members train in this
    process, everything else goes to the dispatcher."""
    if not plan.options.stacked:
        return [], list(plan.tasks)
    members = [t for t in plan.tasks if not is_multiclass(t.name)]
    return members, [t for t in plan.tasks if is_multiclass(t.name)]


def dispatch_jobs(plan):
    """The workers of the dispatched tasks: ``--jobs``, else :func:`default_jobs` over the networks not finished yet
    (finished ones are skipped at once, so only the others count for the layout)."""
    names = [t.name for t in _parts(plan)[1]]
    unfinished = [name for name in names if finished_metrics(plan.folder.network_dir(name)) is None]
    return plan.options.jobs or default_jobs(unfinished or names)


def describe(plan):
    """How the plan trains, for the progress line: ``3 job(s)``, ``stacked in one process``, or both."""
    stacked, dispatched = _parts(plan)
    jobs = f"{dispatch_jobs(plan)} job(s)"
    if not stacked:
        return jobs
    return f"members stacked in one process, then {jobs}" if dispatched else "stacked in one process"


def _size(task):
    """Parameters of the task's network: what its training time grows with."""
    model = task.config["model"]
    return parameter_count(model["width"], model["depth"], model["out_channels"])


def dispatch(plan, *, data=None):
    """Train every task of the plan; record the finished checksums; return the results in the plan's order.

    The members train stacked in this process first when ``options.stacked``; the other tasks go to
    :func:`~members.parallel.train_parallel` together, the largest networks first (local workers
    memory-map one copy of ``data``'s split; a Dask cluster loads the data file).
    """
    options = plan.options
    stacked, dispatched = _parts(plan)
    results = {}
    if stacked:
        results.update({t.name: r for t, r in zip(stacked, train_stacked_tasks(stacked, data=data))})
    if dispatched:
        dispatched = sorted(dispatched, key=_size, reverse=True)  # the longest tasks first: none starts last
        trained = train_parallel(dispatched, jobs=dispatch_jobs(plan), backend=options.backend,
                                 scheduler=options.scheduler, data=data)
        results.update({t.name: r for t, r in zip(dispatched, trained)})
    results = [results[name] for name in plan.names]
    folder = plan.folder
    finished = [path for r in results if r.get("finished")
                for path in [folder.best_path(r["name"]), *(folder.snapshot_path(r["name"], e)
                                                           for e in folder.snapshot_epochs(r["name"]))]]
    recorded = folder.manifest().get("checksums", {})
    missing = [p for p in finished if p.relative_to(folder.path).as_posix() not in recorded]
    if missing:
        folder.record_checksums(missing)
    return results


def train_networks(names, *, run, data=None, options=None, log=None):
    """Train the named networks (members, ``"baseline"``, its replicas, control nets) into ``run``; return their
    metrics in the order of ``names``.

    :func:`plan_training` then :func:`dispatch`, all networks together. ``options`` is a
    :class:`TrainOptions` (default: its defaults). Finished networks are skipped; unfinished ones
    continue from ``latest.pt``.
    """
    options = options or TrainOptions()
    log = log or line_logger(__name__)
    if options.stacked and ((options.jobs or 1) > 1 or options.backend != DEFAULT_BACKEND):
        raise EnsembleError("--stacked trains all members in one process on every core; leave out --jobs and --backend")
    options = options.replace(device=resolve_device(options.device))  # refused before anything is written
    if options.tensorboard:
        check_tensorboard()
    RunFolder(run).check_writable("train")  # a shipped run is refused before the data is looked for
    if will_use_workers(len(names), jobs=options.jobs, backend=options.backend, stacked=options.stacked):
        start_server()  # the workers' imports overlap the data load
    data = load_data(data)
    plan = plan_training(names, data=data, run=run, options=options, log=None if options.quiet else log)
    attach_teachers(plan, data, log=None if options.quiet else log)
    if not options.quiet:
        log(f"training {', '.join(names)} on {len(plan.train_idx)} tiles, validating on {plan.scored_tiles} of "
            f"{len(plan.val_idx)} validation tiles each epoch "
            f"({options.preset} preset, objective {plan.objective}, {describe(plan)}, device {options.device})")
    return dispatch(plan, data=data)
