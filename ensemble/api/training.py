"""Training verbs: the members, the baseline and its replicas, the ensembling control, the student."""
from __future__ import annotations

from typing import Any

from ..core.classes import BASELINE, parse_members
from ..core.data import load_data
from ..core.defaults import DEFAULT_BACKEND
from ..core.errors import EnsembleError
from ..core.locations import check_run_path, resolve_run
from ..core.logs import run_log
from ..core.types import DataArg, PathArg
from ..core.wording import api_function, say


def _start_workers(n_networks, options):
    """Start the training workers' server (:mod:`members.workers`) before this process imports torch, when
    ``n_networks`` trained with ``options`` (``TrainOptions`` fields) go to local worker processes: its
    imports then overlap this process's imports and data loading."""
    from members.workers import start_server, will_use_workers

    if will_use_workers(n_networks, jobs=options.get("jobs"), backend=options.get("backend", DEFAULT_BACKEND),
                        stacked=options.get("stacked", False)):
        start_server()


def _training(options, n_networks, run):
    """The keyword options of a training verb as ``(TrainOptions, log, say)``: ``say`` is where the verb says its
    run folder (nothing when ``quiet``). An unknown keyword is a ``TypeError`` naming it. A ``run`` that cannot
    be a folder is refused first, before any worker starts."""
    check_run_path(run)
    _start_workers(n_networks, options)
    from ..recipe import TrainOptions

    log = options.pop("log", say)
    options = TrainOptions.from_arguments(**options)
    return options, log, None if options.quiet else log


def _baseline_names(replicas):
    """The baseline and its ``replicas - 1`` further nets; ``--replicas`` below 1 is refused."""
    from ..core.classes import baseline_replica_names

    if replicas < 1:
        raise EnsembleError(f"--replicas: must be at least 1, got {replicas}")
    return [BASELINE, *baseline_replica_names(replicas)]


def _refuse_stacked(options):
    if options.stacked:
        raise EnsembleError("--stacked trains one-vs-rest members only; the baseline trains with: ensemble baseline")


@api_function
def train(data: DataArg = None, run: PathArg | None = None, members: str = "all",
          **options: Any) -> list[dict[str, Any]]:
    """Train one-vs-rest members (``"all"`` or comma-separated class names) into ``run`` (default ``runs/default``,
    said; :func:`~ensemble.core.locations.resolve_run`).

    Options (the fields of :class:`~ensemble.recipe.TrainOptions`): ``preset``, ``epochs``, ``width``, ``jobs``,
    ``backend``, ``scheduler``, ``stacked``, ``device``, ``seed``, ``val_fraction``, ``objective``, ``loss``,
    ``samples_per_epoch``, ``overrides`` (``--set`` strings), ``init_from`` (a run, or ``"reference"``, whose
    ``best.pt`` of each network it starts from), ``quiet``; ``config`` (a recipe file, ``.toml`` or ``.json``:
    :mod:`ensemble.recipe`; ``seed``, ``val_fraction`` and ``objective`` left out or ``None`` are the file's);
    and ``log``. Layers: preset < ``config`` < ``overrides`` < the other options given. Finished members
    are skipped; unfinished ones continue from ``latest.pt``. Returns a list of metrics dicts.
    """
    names = parse_members(members)
    options, log, say = _training(options, len(names), run)
    from ..train import train_networks

    run = resolve_run(run, log=say)
    with run_log(run, "train"):
        return train_networks(names, data=data, run=run, options=options, log=log)


@api_function
def baseline(data: DataArg = None, run: PathArg | None = None, replicas: int = 1,
             **options: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Train the multiclass baseline into ``run``; same options as :func:`train`. Returns its metrics.

    ``replicas`` > 1 also trains ``replicas - 1`` further nets of its width with seeds of their own
    (``baseline_1``, ...); then a list of every net's metrics is returned. With 2, ``ensemble evaluate``
    scores the pair's softmax average as ``baseline_pair``: the multiclass way to spend twice the budget.
    """
    names = _baseline_names(replicas)
    options, log, say = _training(options, len(names), run)
    _refuse_stacked(options)
    from ..train import train_networks

    run = resolve_run(run, log=say)
    with run_log(run, "baseline"):
        results = train_networks(names, data=data, run=run, options=options, log=log)
    return results[0] if replicas == 1 else results


@api_function
def control(data: DataArg = None, run: PathArg | None = None, size: int | None = None,
            **options: Any) -> list[dict[str, Any]]:
    """Train the ensembling control into ``run``: ``size`` (default 5) multiclass U-Nets of the members' width.

    Each is trained like the baseline (loss, sampler, recipe) with its own seed; ``ensemble evaluate``
    scores their softmax average as the ``control`` row. Same options as :func:`train`. Returns their metrics.
    """
    from ..core.classes import CONTROL_SIZE, control_names

    names = control_names(size or CONTROL_SIZE)
    options, log, say = _training(options, len(names), run)
    _refuse_stacked(options)
    from ..train import train_networks

    run = resolve_run(run, log=say)
    with run_log(run, "control"):
        return train_networks(names, data=data, run=run, options=options, log=log)


@api_function
def distill(data: DataArg = None, run: PathArg | None = None, *, teacher: str | None = None,
            alpha: float | None = None, temperature: float | None = None, unlabeled: str | None = None,
            unlabeled_scale: float = 1.0, **options: Any) -> dict[str, Any]:
    """Train the student into ``run``: one multiclass U-Net (by default the baseline's architecture and width) that
    learns ``alpha`` x the labels' loss + (1 - alpha) x ``temperature``^2 x KL(teacher || student) on every pixel.

    ``teacher`` is a served strategy of the run (default: the run's served default, said); its logits of the
    clean training tiles are computed once and cached outside the run (:mod:`ensemble.distill`), while the
    student sees them augmented like any network of the run. ``unlabeled`` names images the student also learns
    from, through the teacher alone (``PATH.npz:KEY``, an image, a folder or a ``.txt`` list of images; at
    ``unlabeled_scale`` like ``--scale``; cut into tiles at the training scale). Same options as :func:`baseline`
    (``width``, ``epochs``, ``preset``, ``seed``, ``overrides``, ``config``, ``init_from``, ...). ``teacher``,
    ``alpha`` and ``temperature`` left ``None`` are the recipe file's or ``--set``'s (``distill.*``), else the
    run's served default, 0.5 and 2.0. Returns the student's metrics.
    """
    from ..core.classes import STUDENT
    from ..distill import check_teacher
    from ..inference.strategies import default_strategy

    train_options, log, say = _training(options, 1, run)
    _refuse_stacked(train_options)
    from ..train import planned_teacher, train_networks

    folder = resolve_run(run, log=say)
    teacher = teacher or planned_teacher(train_options) or default_strategy(folder, log=say)
    check_teacher(folder, teacher)  # before anything is written to the run
    settings = {"teacher": teacher, **{k: v for k, v in (("alpha", alpha), ("temperature", temperature))
                                       if v is not None}}
    if unlabeled:
        from ..distill import unlabeled_tiles

        data = load_data(data)
        settings["unlabeled"] = unlabeled_tiles(unlabeled, data.tile_shape, unlabeled_scale, log=say)
    train_options = train_options.replace(distill=settings)
    with run_log(folder, "distill"):
        return train_networks([STUDENT], data=data, run=folder, options=train_options, log=log)[0]
