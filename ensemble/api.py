"""Importable API: one function per CLI verb, for notebooks and scripts.

Each ``ensemble`` subcommand is a thin wrapper over a function here. Modules that load torch
are imported inside the functions that need them, so ``ensemble --help`` starts without torch.
"""
from pathlib import Path

import numpy as np

from .core.classes import BASELINE, parse_members
from .core.data import load_data, open_npz, resolve_data_path
from .core.datasummary import summarize
from .core.defaults import BATCH_SIZE, CROSS_FIT_FOLDS, DEFAULT_BACKEND, DEFAULT_STEP, MAX_PIXELS
from .core.errors import DataError, EnsembleError
from .core.fileio import atomic_path, check_output
from .core.locations import check_run_path, resolve_run
from .core.logs import run_log
from .core.outliers import MIN_REPEATS, UNIFORM_SHARE, find_outliers
from .core.runfolder import RunFolder
from .core.wording import api_function, say, warn
from .reporting.text import format_training_summary


def _writable_run(path):
    """``path`` when commands may write to it (its log file goes there), ``None`` for a shipped, read-only run."""
    return None if RunFolder(path).read_only else path


@api_function
def inspect_data(data=None, min_repeats=MIN_REPEATS, uniform_share=UNIFORM_SHARE):
    """Validate a data file and return its summary dict (counts, class shares, groups, outliers)."""
    return summarize(load_data(data), min_repeats=min_repeats, uniform_share=uniform_share)


@api_function
def clean_data(out, data=None, min_repeats=MIN_REPEATS, uniform_share=UNIFORM_SHARE):
    """Write a copy of the data file without outlier tiles, same keys, groups and ids aligned.

    Returns ``{"kept": int, "removed": int, "reasons": {reason: count}, "out": str}``.
    """
    check_output("--out", out, "a file name for the cleaned .npz")
    path = resolve_data_path(data)
    loaded = load_data(path)
    report = find_outliers(loaded.images, loaded.masks, min_repeats=min_repeats, uniform_share=uniform_share)
    keep = report.keep_mask()
    if not keep.any():
        raise DataError(f"{path}: every tile is an outlier; nothing would be left to write")
    arrays = open_npz(path)
    per_tile = {"training_set", "training_groups", "training_ids"}
    cleaned = {k: (v[keep] if k in per_tile else v) for k, v in arrays.items()}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **cleaned)
    return {
        "out": str(out),
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "reasons": {reason: int(len(idx)) for reason, idx in report.reasons.items()},
    }


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
    from .recipe import TrainOptions

    log = options.pop("log", say)
    options = TrainOptions.from_arguments(**options)
    return options, log, None if options.quiet else log


def _baseline_names(replicas):
    """The baseline and its ``replicas - 1`` further nets; ``--replicas`` below 1 is refused."""
    from .core.classes import baseline_replica_names

    if replicas < 1:
        raise EnsembleError(f"--replicas: must be at least 1, got {replicas}")
    return [BASELINE, *baseline_replica_names(replicas)]


def _refuse_stacked(options):
    if options.stacked:
        raise EnsembleError("--stacked trains one-vs-rest members only; the baseline trains with: ensemble baseline")


@api_function
def train(data=None, run=None, members="all", **options):
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
    from .train import train_networks

    run = resolve_run(run, log=say)
    with run_log(_writable_run(run), "train"):
        return train_networks(names, data=data, run=run, options=options, log=log)


@api_function
def baseline(data=None, run=None, replicas=1, **options):
    """Train the multiclass baseline into ``run``; same options as :func:`train`. Returns its metrics.

    ``replicas`` > 1 also trains ``replicas - 1`` further nets of its width with seeds of their own
    (``baseline_1``, ...); then a list of every net's metrics is returned. With 2, ``ensemble evaluate``
    scores the pair's softmax average as ``baseline_pair``: the multiclass way to spend twice the budget.
    """
    names = _baseline_names(replicas)
    options, log, say = _training(options, len(names), run)
    _refuse_stacked(options)
    from .train import train_networks

    run = resolve_run(run, log=say)
    with run_log(_writable_run(run), "baseline"):
        results = train_networks(names, data=data, run=run, options=options, log=log)
    return results[0] if replicas == 1 else results


@api_function
def control(data=None, run=None, size=None, **options):
    """Train the ensembling control into ``run``: ``size`` (default 5) multiclass U-Nets of the members' width.

    Each is trained like the baseline (loss, sampler, recipe) with its own seed; ``ensemble evaluate``
    scores their softmax average as the ``control`` row. Same options as :func:`train`. Returns their metrics.
    """
    from .core.classes import CONTROL_SIZE, control_names

    names = control_names(size or CONTROL_SIZE)
    options, log, say = _training(options, len(names), run)
    _refuse_stacked(options)
    from .train import train_networks

    run = resolve_run(run, log=say)
    with run_log(_writable_run(run), "control"):
        return train_networks(names, data=data, run=run, options=options, log=log)


@api_function
def distill(data=None, run=None, *, teacher=None, alpha=None, temperature=None, unlabeled=None, unlabeled_scale=1.0,
            **options):
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
    from .core.classes import STUDENT
    from .distill import check_teacher
    from .inference.strategies import default_strategy

    options, log, say = _training(options, 1, run)
    _refuse_stacked(options)
    from .train import planned_teacher, train_networks

    folder = resolve_run(run, log=say)
    teacher = teacher or planned_teacher(options) or default_strategy(folder, log=say)
    check_teacher(folder, teacher)  # before anything is written to the run
    settings = {"teacher": teacher, **{k: v for k, v in (("alpha", alpha), ("temperature", temperature))
                                       if v is not None}}
    if unlabeled:
        from .distill import unlabeled_tiles

        data = load_data(data)
        settings["unlabeled"] = unlabeled_tiles(unlabeled, data.tile_shape, unlabeled_scale, log=say)
    options = options.replace(distill=settings)
    with run_log(_writable_run(folder), "distill"):
        return train_networks([STUDENT], data=data, run=folder, options=options, log=log)[0]


def _options(device="auto", **settings):
    """The :class:`~ensemble.inference.options.InferenceOptions` of a verb: ``device`` resolved (an unavailable
    one refused first), the other fields as given."""
    from .core.devices import resolve_device
    from .inference import InferenceOptions

    return InferenceOptions(device=resolve_device(device), **settings)


@api_function
def fuse(run=None, *, strategy="learned", data=None, seed=0, stack=None, device="auto", engine="auto",
         quiet=False, log=say):
    """Fit fusion ``strategy`` (or ``"all"``) on the run's validation logits; return per-strategy results.

    ``device`` (``auto``, ``cpu`` or ``cuda``) and ``engine`` (``auto``, ``torch``, ``onnxruntime``:
    :mod:`ensemble.inference.engines`) run the members when their logits are not cached yet.
    """
    from .fuse import fit_fusers, parse_strategies

    log = None if quiet else log
    options = _options(device, stack=stack, engine=engine)
    run = resolve_run(run, log=log)
    with run_log(_writable_run(run), "fuse"):
        return fit_fusers(run, parse_strategies(strategy), data=data, seed=seed, options=options, log=log)


@api_function
def default_run(run=None, log=None):
    """The trained run a serving verb uses: ``run``, else ``runs/default``, else the shipped reference run
    (:func:`~ensemble.core.locations.resolve_run`), said to ``log``."""
    return resolve_run(run, trained=True, log=log)


@api_function
def evaluate(run=None, *, data=None, tta="none", out=None, seed=0, stack=None, cross_fit=CROSS_FIT_FOLDS,
             device="auto", engine="auto", curve=False, ablation=False, curve_from=None, tta_gain=False, quiet=False,
             log=say, frames=False, step=DEFAULT_STEP, robustness=False, corruptions=None):
    """Evaluate every fuser of ``run``, each member alone and the baseline on the same tiles; write the report.

    Strategies are scored cross-fitted over ``cross_fit`` folds of validation rover stops (0: in-sample).
    The networks run on ``device`` (``auto``, ``cpu`` or ``cuda``) with ``engine`` (``auto``, ``torch``,
    ``onnxruntime``). ``curve=True`` adds the budget curve (:mod:`ensemble.evaluation.curve`) from the networks'
    snapshots; ``tta_gain=True`` measures flip TTA for every served model and records where it is served by
    default. ``frames=True`` also scores the validation images as whole frames rebuilt from their two tiles,
    stitched by sliding windows ``step`` tiles apart, beside tile-by-tile prediction. ``robustness=True`` adds the
    robustness benchmark: the baseline, the bias-tuned baseline and the served default under 13 corruptions at 3
    severities (:mod:`ensemble.evaluation.robustness`); ``corruptions`` (names) limits it.
    """
    from .evaluation.evaluate import evaluate_run

    log = None if quiet else log
    options = _options(device, tta=tta, stack=stack, engine=engine, step=step)
    run = default_run(run, log)
    with run_log(_writable_run(run), "evaluate"):
        return evaluate_run(run, data=data, options=options, out=out, seed=seed, cross_fit=cross_fit,
                        curve=curve, log=log, ablation=ablation, curve_from=curve_from, tta_gain=tta_gain,
                        frames=frames, robustness=robustness, corruptions=_corruption_names(corruptions))


def _corruption_names(corruptions):
    """``corruptions`` (names, or one comma-separated string) checked against the benchmark's; ``None`` for all."""
    if not corruptions:
        return None
    from .core.corruptions import CORRUPTIONS

    names = [n.strip() for n in corruptions.split(",")] if isinstance(corruptions, str) else list(corruptions)
    valid = [c.name for c in CORRUPTIONS]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise EnsembleError(f"--corruptions: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return names


def _served_tta(run, strategy, tta, say=say):
    """``tta``, or the one the run's evaluation recorded for ``strategy`` (:func:`~ensemble.inference.default_tta`)."""
    if tta is not None:
        return tta
    from .inference import check_strategy, default_tta

    check_strategy(RunFolder(run), strategy)  # an unknown strategy is refused before anything is said
    return default_tta(run, strategy, say)


def _served_strategy(run, strategy, say=say):
    """``strategy``, or the run's default (:func:`~ensemble.inference.default_strategy`), said to ``say``."""
    if strategy is not None:
        return strategy
    from .inference import default_strategy

    return default_strategy(run, say)


@api_function
def predict(run=None, *, strategy=None, data=None, images=None, out=None, png_dir=None, uncertainty_dir=None,
            tta=None, batch_size=BATCH_SIZE, stack=None, device="auto", engine="auto", quiet=False, log=say,
            masks_dir=None, overlay_dir=None, summary=None, scale=1.0, step=DEFAULT_STEP, max_pixels=MAX_PIXELS,
            check_inputs=True):
    """Predict masks for ``test_set`` of ``data`` (or ``images``: an image file, a folder of images, an .npz, or an
    array (N, H, W)); write a Kaggle submission CSV and/or per-image outputs (see
    :func:`~ensemble.predict.predict_run`). For masks and probabilities in memory, use :func:`predictor`.

    The networks run on ``device`` (``auto``, ``cpu`` or ``cuda``) with ``engine`` (``auto``, ``torch``,
    ``onnxruntime``). ``strategy`` and ``tta`` default to what the run's evaluation recorded
    (:func:`~ensemble.inference.default_strategy`, :func:`~ensemble.inference.default_tta`), said on stderr.
    Images of any size go through sliding windows ``step`` tiles apart at ``scale`` input pixels per training
    pixel; ``max_pixels`` (default a 4096x4096 image) refuses larger ones. Progress goes to stderr unless
    ``quiet``.

    With ``check_inputs`` every image is checked against the image statistics of the run's training tiles
    (``RUN/input_stats.json``): one ``warning: ...`` line on stderr per image out of range, also when ``quiet``
    (a diagnostic, not progress), and the ``summary``'s ``warnings`` column. A run without the file says so on
    stderr once, unless ``quiet``. The masks are the same either way.
    """
    from .predict import predict_run

    log = None if quiet else log
    options = _options(device, batch_size=batch_size, stack=stack, engine=engine, scale=scale, step=step)
    run = default_run(run, log)
    said = []  # the default strategy is said once the inputs are checked: an error stays one line
    strategy = _served_strategy(run, strategy, said.append)
    options = options.replace(tta=_served_tta(run, strategy, tta, said.append))
    note = None if quiet else (lambda: [say(line) for line in said])
    return predict_run(run, strategy, data=data, images=images, out=out, png_dir=png_dir,
                       uncertainty_dir=uncertainty_dir, masks_dir=masks_dir, overlay_dir=overlay_dir, summary=summary,
                       options=options, max_pixels=max_pixels, log=log, note=note,
                       progress=None if quiet else say, warn=warn, check_inputs=check_inputs)


@api_function
def score(pred, masks):
    """Score predicted masks ``pred`` (submission CSV, .npy, .npz[:KEY]) against true ``masks`` in every convention.

    Returns ``{"competition" | "labeled" | "allpixels": {"soil", "bedrock", "sand", "big_rock", "mean"},
    "tiles": n, "unit": "tiles" | "images", "class0_on_labeled": share}``: ``n`` counts the masks scored, tiles of
    an array or CSV, or whole images of a folder of PNGs (``unit``).
    """
    from .evaluation.score import score_files

    return score_files(pred, masks)


@api_function
def predictor(run=None, strategy=None, *, device="auto", tta=None, batch_size=BATCH_SIZE, stack=None,
              engine="auto", scale=1.0, step=DEFAULT_STEP, check_inputs=True):
    """A :class:`~ensemble.inference.Predictor` for notebooks: load ``run`` once, then ``predict(images)`` (masks),
    ``predict_proba(images)`` and ``predict_logits(images)``; no files.

    ``images``: one (H, W) array, a list of arrays of any sizes or an (N, H, W) array, uint8 or float;
    results come back at the input's size, in its form. Images other than the run's tiles go through
    sliding windows ``step`` tiles apart at ``scale`` input pixels per training pixel.
    ``run`` defaults to the shipped reference run; ``strategy`` to the run's best recorded by its
    evaluation, ``tta`` to the one recorded for that strategy (both said on stderr).

    With ``check_inputs`` (the default) ``predict``, ``predict_proba`` and ``predict_logits`` check their images
    against the image statistics of the run's training tiles: the records of the last call are in
    ``input_checks_`` (one :class:`~ensemble.core.imagestats.InputCheck` per image), and images out of range
    give one :class:`~ensemble.core.imagestats.InputWarning`; ``check(images)`` checks without predicting. A
    run without ``input_stats.json`` is not checked, and stderr says so once.
    """
    from .inference import Predictor

    options = _options(device, batch_size=batch_size, stack=stack, engine=engine, scale=scale, step=step)
    run = default_run(run, say)
    strategy = _served_strategy(run, strategy)
    made = Predictor(run, strategy, options=options.replace(tta=_served_tta(run, strategy, tta)),
                     check_inputs=check_inputs)
    if check_inputs and made.unchecked_note():
        say(made.unchecked_note())
    return made


@api_function
def run_all(preset="quick", data=None, *, run=None, seed=None, jobs=None, device="auto", engine="auto", quiet=False,
            log=say, with_control=False, curve=False, replicas=1, members_options=None, evaluate_options=None,
            distill_options=None, **train_options):
    """The main job: train members and baseline, fuse every strategy, evaluate; return the evaluation.

    Every network of the run (the members, the baseline and its ``replicas``, the control's nets with
    ``with_control``) is a task of one training plan, dispatched together (:func:`~ensemble.train.dispatch`),
    so ``jobs`` workers or a Dask cluster train them all at once. ``run`` defaults to ``runs/default``.
    ``train_options`` are :class:`~ensemble.recipe.TrainOptions` fields (``width`` is the members'; the
    baseline is matched to them, the control gets their width), with ``config`` (a recipe file) and
    ``init_from`` (a run every network starts from; with ``distill_options`` it must hold a student too) as for
    :func:`train`; ``seed`` ``None`` is the file's, else 0; ``members_options`` (``stacked``,
    ``backend``, ``scheduler``) say how: ``stacked`` trains the members stacked in this process, then the
    multiclass nets through the dispatcher; ``backend`` and ``scheduler`` dispatch every network.
    ``evaluate_options`` go to :func:`evaluate` (``cross_fit``, ``ablation``, ``tta_gain``). ``curve`` adds the
    budget curve (the recipe's ``snapshot_fractions`` say where its points are). ``distill_options`` (a dict,
    possibly empty: ``teacher``, ``alpha``, ``temperature``) add the student: after the evaluation has named the
    served default, it is distilled from it (:func:`distill`), ``student_bias`` is fitted, and the run is
    evaluated again. A quick run's result has a ``note``: what the shipped full run measured.
    """
    from .core.classes import CLASS_NAMES, CONTROL_SIZE, control_names, is_baseline_like, is_control
    from .reporting.text import format_fusion_results

    baselines = _baseline_names(replicas)
    names = [*CLASS_NAMES, *baselines, *(control_names(CONTROL_SIZE) if with_control else ())]
    check_run_path(run)
    _start_workers(len(names), {"jobs": jobs, **train_options, **(members_options or {})})
    from members.warmstart import init_run

    from .core.classes import STUDENT
    from .recipe import TrainOptions
    from .train import train_networks

    options = TrainOptions.from_arguments(preset=preset, seed=seed, jobs=jobs, device=device, quiet=quiet,
                                          **train_options, **(members_options or {}))
    seed = options.seed
    if distill_options is not None and options.init_from:  # the student starts from the source's, checked first
        source = RunFolder(init_run(options.init_from))
        if not source.best_path(STUDENT).is_file():
            raise EnsembleError(f"--init-from {options.init_from}: network {STUDENT} is not there (no "
                                f"{source.best_path(STUDENT)}), and --distill trains one from it")
    run = resolve_run(run, log=None if quiet else log)
    with run_log(_writable_run(run), "run"):
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
                                       quiet=quiet, log=log)))
        say("== 4/4 evaluation")
        result = evaluate(run=run, data=data, seed=seed, device=device, engine=engine, quiet=quiet, log=log,
                          curve=curve, **(evaluate_options or {}))
        if distill_options is not None:
            from .core.classes import TUNED_STUDENT

            say("== 5/6 student distilled from the served model")
            student = distill(data=data, run=run, preset=preset, seed=seed, jobs=jobs, device=device, quiet=quiet,
                              log=log, **{k: v for k, v in train_options.items() if k != "width"}, **distill_options)
            say(format_training_summary([student]))
            fuse(run=run, strategy=TUNED_STUDENT, data=data, seed=seed, device=device, engine=engine, quiet=quiet,
                 log=log)
            say("== 6/6 evaluation with the student")
            result = evaluate(run=run, data=data, seed=seed, device=device, engine=engine, quiet=quiet, log=log,
                              curve=curve, **(evaluate_options or {}))
        if options.tensorboard:
            from .reporting.progress import log_figures

            log_figures(run, sorted(Path(result["report_md"]).parent.glob("*.png")))
        if preset == "quick":
            result["note"] = _smoke_run_note()
        return result


@api_function
def status(run=None):
    """Where ``run`` stands (default ``runs/default``): a list of
    :class:`~ensemble.reporting.status.NetworkStatus`, one per network of its ``config.json`` (done, running,
    stopped or queued; epoch, best score, seconds per epoch, ETA). Works while the run trains."""
    from .core.runfolder import RunFolder
    from .reporting.status import run_status

    folder = RunFolder(resolve_run(run))
    if not folder.config_path.exists():
        raise EnsembleError(f"run {folder.path}: no {folder.config_path.name} there (not a run folder, or nothing "
                            "planned in it yet)")
    return run_status(folder.path)


def _smoke_run_note():
    """:func:`~ensemble.reporting.report.smoke_run_line` from the shipped reference run's report, or ``None``
    without one."""
    import json

    from .core.locations import shipped_run
    from .reporting.report import smoke_run_line

    report = shipped_run() / "evaluation" / "report.json"
    try:
        return smoke_run_line(json.loads(report.read_text())["table"], report)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@api_function
def export(run=None, strategy=None, *, out="model.pt2", format=None, tta=None):
    """Write one program mapping images (N, 1, H, W) to probabilities: a ``torch.export`` program
    (``.pt2``: stacked members + fuser) or an ONNX graph (``.onnx``: members + fuser, or the baseline).

    ``format`` (``pt2`` or ``onnx``) defaults to the extension of ``out``; ``tta="flip"`` bakes the flip into
    the program (default: what the run's evaluation recorded for the strategy).
    """
    from .inference import Predictor

    suffix = Path(str(out)).suffix.lstrip(".")
    check_output("--out", out, f"a file name ending in .{format}" if format else "a file name ending in .pt2 or .onnx")
    if not format and suffix not in ("pt2", "onnx"):
        raise EnsembleError(f"--out {out}: expected a file name ending in .pt2 or .onnx (or --format pt2|onnx)")
    format = format or suffix
    if format not in ("pt2", "onnx"):
        raise EnsembleError(f"--format: unknown {format!r}; valid: pt2, onnx")
    if suffix != format:
        raise EnsembleError(f"--out {out}: the file name must end in .{format} for --format {format}")
    run = default_run(run, say)
    strategy = _served_strategy(run, strategy)
    tta = _served_tta(run, strategy, tta)
    predictor = Predictor(run, strategy, device="cpu", tta=tta, engine="torch")
    predictor.export(out, format)
    return {"out": str(out), "strategy": strategy, "format": format, "tta": tta,
            "tile_shape": list(predictor.tile_shape)}
