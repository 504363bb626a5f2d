"""The main job (``ensemble run``) and where a run stands (``ensemble status``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import wording
from ..core.data import load_data
from ..core.devices import resolve_device
from ..core.errors import EnsembleError
from ..core.locations import check_run_path, resolve_run
from ..core.logs import run_log
from ..core.runfolder import RunFolder
from ..core.types import DataArg, PathArg
from ..core.wording import api_function
from ..reporting.text import format_training_summary
from .serving import evaluate, fuse
from .training import _baseline_names, _start_workers, distill

if TYPE_CHECKING:
    from ..reporting.status import NetworkStatus


@api_function
def run_all(preset: str = "quick", data: DataArg = None, *, run: PathArg | None = None, replicas: int = 1,
            with_control: bool = False, evaluate_options: dict[str, Any] | None = None,
            distill_options: dict[str, Any] | None = None, **train_options: Any) -> dict[str, Any]:
    """The main job: train members and baseline, fuse every strategy, evaluate; return the evaluation.

    Every network of the run (the members, the baseline and its ``replicas``, the control's nets with
    ``with_control``) is a task of one training plan, dispatched together (:func:`~ensemble.train.dispatch`),
    so ``jobs`` workers or a Dask cluster train them all at once. ``run`` defaults to ``runs/default``.
    ``train_options`` are :class:`~ensemble.recipe.TrainOptions` fields (``width`` is the members'; the
    baseline is matched to them, the control gets their width; ``seed``, ``device``, ``jobs``, ``quiet``; ``config``
    (a recipe file) and ``init_from`` (a run every network starts from; with ``distill_options`` it must hold a
    student too) as for :func:`train`; ``seed`` ``None`` is the file's, else 0; ``stacked`` trains the members
    stacked in this process, then the multiclass nets through the dispatcher; ``backend`` and ``scheduler``
    dispatch every network), and ``engine`` and ``curve`` for the fusion and the evaluation.
    ``evaluate_options`` go to :func:`evaluate` (``cross_fit``, ``ablation``, ``tta_gain``, ...). ``curve`` adds
    the budget curve (the recipe's ``snapshot_fractions`` say where its points are). ``distill_options`` (a dict,
    possibly empty: ``teacher``, ``alpha``, ``temperature``) add the student: after the evaluation has named the
    served default, it is distilled from it (:func:`distill`), ``student_bias`` is fitted, and the run is
    evaluated again. A quick run's result has a ``note``: what the shipped full run measured.
    """
    from ..core.classes import CLASS_NAMES, CONTROL_SIZE, control_names, is_baseline_like, is_control
    from ..reporting.text import format_fusion_results

    baselines = _baseline_names(replicas)
    names = [*CLASS_NAMES, *baselines, *(control_names(CONTROL_SIZE) if with_control else ())]
    check_run_path(run)
    engine, curve = train_options.pop("engine", "auto"), train_options.pop("curve", False)
    _start_workers(len(names), train_options)
    from members.warmstart import init_run

    from ..core.classes import STUDENT
    from ..recipe import TrainOptions
    from ..train import train_networks

    options = TrainOptions.from_arguments(preset=preset, **train_options)
    options = options.replace(device=resolve_device(options.device))  # refused before anything is said or written
    seed, jobs, device, quiet, log = options.seed, options.jobs, options.device, options.quiet, wording.say
    if distill_options is not None and options.init_from:  # the student starts from the source's, checked first
        source = RunFolder(init_run(options.init_from))
        if not source.best_path(STUDENT).is_file():
            raise EnsembleError(f"--init-from {options.init_from}: network {STUDENT} is not there (no "
                                f"{source.best_path(STUDENT)}), and --distill trains one from it")
    run = resolve_run(run, log=None if quiet else log)
    with run_log(run, "run"):
        data = load_data(data)  # read and hashed once; every step below gets the loaded data
        say = (lambda line: None) if quiet else log
        say(f"== 1-2/4 members, multiclass baseline{' and ensembling control' if with_control else ''}, "
            f"trained together ({run})")
        results = train_networks(names, data=data, run=run, options=options, log=log)
        say("== 1/4 members")
        say(format_training_summary([r for r in results if r["name"] in CLASS_NAMES]))
        say("== 2/4 multiclass baseline")
        say(format_training_summary([r for r in results if is_baseline_like(r["name"])]))
        if with_control:
            say("== 2b/4 ensembling control (multiclass nets of the members' width, averaged)")
            say(format_training_summary([r for r in results if is_control(r["name"])]))
        failed = [f"{r['name']} ({r['error']})" for r in results if r.get("failed") and r["name"] in CLASS_NAMES]
        if failed:
            raise EnsembleError(f"members failed: {'; '.join(failed)}; rerun to retrain only them")
        say("== 3/4 fusion")
        say(format_fusion_results(fuse(run=run, strategy="all", data=data, seed=seed, device=device, engine=engine,
                                       quiet=quiet)))
        say("== 4/4 evaluation")
        result = evaluate(run=run, data=data, seed=seed, device=device, engine=engine, quiet=quiet,
                          curve=curve, **(evaluate_options or {}))
        if distill_options is not None:
            from ..core.classes import TUNED_STUDENT

            say("== 5/6 student distilled from the served model")
            student = distill(data=data, run=run, preset=preset, seed=seed, jobs=jobs, device=device, quiet=quiet,
                              log=log, **{k: v for k, v in train_options.items()
                                          if k not in ("width", "seed", "jobs", "device", "quiet")}, **distill_options)
            say(format_training_summary([student]))
            fuse(run=run, strategy=TUNED_STUDENT, data=data, seed=seed, device=device, engine=engine, quiet=quiet)
            say("== 6/6 evaluation with the student")
            result = evaluate(run=run, data=data, seed=seed, device=device, engine=engine, quiet=quiet,
                              curve=curve, **(evaluate_options or {}))
        if options.tensorboard:
            from ..reporting.progress import log_figures

            log_figures(run, sorted(Path(result["report_md"]).parent.glob("*.png")))
        if preset == "quick":
            result["note"] = _smoke_run_note()
        return result


@api_function
def status(run: PathArg | None = None) -> list[NetworkStatus]:
    """Where ``run`` stands (default ``runs/default``): a list of
    :class:`~ensemble.reporting.status.NetworkStatus`, one per network of its ``config.json`` (done, running,
    stopped or queued; epoch, best score, seconds per epoch, ETA). Works while the run trains."""
    from ..core.runfolder import RunFolder
    from ..reporting.status import run_status

    folder = RunFolder(resolve_run(run))
    if not folder.config_path.exists():
        raise EnsembleError(f"run {folder.path}: no {folder.config_path.name} there (not a run folder, or nothing "
                            "planned in it yet)")
    return run_status(folder.path)


def _smoke_run_note():
    """:func:`~ensemble.reporting.report.smoke_run_line` from the shipped reference run's report, or ``None``
    without one."""
    import json

    from ..core.locations import shipped_run
    from ..reporting.report import smoke_run_line

    report = shipped_run() / "evaluation" / "report.json"
    try:
        return smoke_run_line(json.loads(report.read_text())["table"], report)
    except (OSError, ValueError, KeyError, TypeError):
        return None
