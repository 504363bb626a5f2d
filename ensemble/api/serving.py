"""Verbs over a trained run: fuse, evaluate, predict, score, the in-memory predictor, export."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import EnsembleError
from ..core.fileio import check_output
from ..core.locations import resolve_run
from ..core.logs import run_log
from ..core.runfolder import RunFolder
from ..core.types import DataArg, PathArg
from ..core.wording import api_function, say

if TYPE_CHECKING:
    import numpy as np

    from ..evaluation.settings import EvaluateSettings
    from ..inference import Predictor
    from ..inference.options import InferenceOptions, PredictSettings


def _options(device="auto", **settings):
    """The :class:`~ensemble.inference.options.InferenceOptions` of a verb: ``device`` resolved (an unavailable
    one refused first), the other fields as given."""
    from ..core.devices import resolve_device
    from ..inference import InferenceOptions

    return InferenceOptions(device=resolve_device(device), **settings)


def _inference_options(options, keywords):
    """The :class:`~ensemble.inference.options.InferenceOptions` of a verb from ``options`` and/or its fields as
    ``keywords`` (``device`` ``auto`` resolved, an unavailable one refused first), with ``tta`` apart: ``None``
    when neither names it (the run's recorded default then serves)."""
    from ..inference.options import InferenceOptions, split_options

    given = split_options(keywords, options=InferenceOptions)["options"]
    device = given.pop("device", "auto" if options is None else options.device)
    tta = given.pop("tta", None if options is None else options.tta)
    base = {k: v for k, v in (options.to_dict() if options else {}).items() if k not in ("device", "tta")}
    return _options(device, **{**base, **given}), tta


@api_function
def fuse(run: PathArg | None = None, *, strategy: str = "learned", data: DataArg = None, seed: int = 0,
         options: InferenceOptions | None = None, quiet: bool = False, **keywords: Any) -> dict[str, Any]:
    """Fit fusion ``strategy`` (or ``"all"``) on the run's validation logits; return per-strategy results.

    ``options`` (:class:`~ensemble.inference.options.InferenceOptions`, or its fields as keywords: ``device``
    ``auto``, ``cpu`` or ``cuda``, ``engine``, ``stack``) run the members when their logits are not cached yet.
    """
    from ..fuse import fit_fusers, parse_strategies

    log = None if quiet else say
    options, _ = _inference_options(options, keywords)
    run = resolve_run(run, log=log)
    with run_log(run, "fuse"):
        return fit_fusers(run, parse_strategies(strategy), data=data, seed=seed, options=options, log=log)


@api_function
def default_run(run: PathArg | None = None, log: Callable[[str], None] | None = None) -> str:
    """The trained run a serving verb uses: ``run``, else ``runs/default``, else the shipped reference run
    (:func:`~ensemble.core.locations.resolve_run`), said to ``log``."""
    return resolve_run(run, trained=True, log=log)


@api_function
def evaluate(run: PathArg | None = None, *, data: DataArg = None, options: InferenceOptions | None = None,
             settings: EvaluateSettings | None = None, quiet: bool = False, **keywords: Any) -> dict[str, Any]:
    """Evaluate every fuser of ``run``, each member alone and the baseline on the same tiles; write the report.

    ``options`` (:class:`~ensemble.inference.options.InferenceOptions`: ``device`` ``auto``, ``cpu`` or ``cuda``,
    ``engine``, ``tta``, ``stack``, ``step``) say how the networks run; ``settings``
    (:class:`~ensemble.evaluation.settings.EvaluateSettings`: ``out``, ``cross_fit``, ``seed``, ``curve``,
    ``curve_from``, ``ablation``, ``tta_gain``, ``frames``, ``robustness``, ``corruptions``) what is computed; their
    fields may be given as keywords instead. Strategies are scored cross-fitted over ``cross_fit`` folds of
    validation rover stops (0: in-sample). ``curve=True`` adds the budget curve (:mod:`ensemble.evaluation.curve`)
    from the networks' snapshots; ``tta_gain=True`` measures flip TTA for every served model and records where it
    is served by default. ``frames=True`` also scores the validation images as whole frames rebuilt from their two
    tiles, stitched by sliding windows ``step`` tiles apart, beside tile-by-tile prediction. ``robustness=True``
    adds the robustness benchmark: the baseline, the bias-tuned baseline and the served default under 13
    corruptions at 3 severities (:mod:`ensemble.evaluation.robustness`); ``corruptions`` (names, or one
    comma-separated string) limits it.
    """
    from ..evaluation.evaluate import evaluate_run
    from ..evaluation.settings import EvaluateSettings
    from ..inference.options import InferenceOptions, split_options

    given = split_options(keywords, options=InferenceOptions, settings=EvaluateSettings)
    options, tta = _inference_options(options, given["options"])
    options = options.replace(tta=tta or "none")
    if "corruptions" in given["settings"]:
        given["settings"]["corruptions"] = _corruption_names(given["settings"]["corruptions"])
    settings = (settings or EvaluateSettings()).replace(**given["settings"])
    log = None if quiet else say
    run = default_run(run, log)
    with run_log(run, "evaluate"):
        return evaluate_run(run, data=data, options=options, settings=settings, log=log)


def _corruption_names(corruptions):
    """``corruptions`` (names, or one comma-separated string) checked against the benchmark's; ``None`` for all."""
    if not corruptions:
        return None
    from ..core.corruptions import CORRUPTIONS

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
    from ..inference import check_strategy, default_tta

    check_strategy(RunFolder(run), strategy)  # an unknown strategy is refused before anything is said
    return default_tta(run, strategy, say)


def _served_strategy(run, strategy, say=say):
    """``strategy``, or the run's default (:func:`~ensemble.inference.default_strategy`), said to ``say``."""
    if strategy is not None:
        return strategy
    from ..inference import default_strategy

    return default_strategy(run, say)


@api_function
def predict(run: PathArg | None = None, strategy: str | None = None, *, data: DataArg = None,
            images: PathArg | np.ndarray | None = None, options: InferenceOptions | None = None,
            settings: PredictSettings | None = None, quiet: bool = False, **keywords: Any) -> dict[str, Any]:
    """Predict masks for ``test_set`` of ``data`` (or ``images``: an image file, a folder of images, an .npz, or an
    array (N, H, W)); write a Kaggle submission CSV and/or per-image outputs (see
    :func:`~ensemble.predict.predict_run`). For masks and probabilities in memory, use :func:`predictor`.

    ``options`` (:class:`~ensemble.inference.options.InferenceOptions`: ``device`` ``auto``, ``cpu`` or ``cuda``,
    ``engine``, ``tta``, ``batch_size``, ``stack``, ``scale``, ``step``) say how the networks run; ``settings``
    (:class:`~ensemble.inference.options.PredictSettings`: ``out``, ``masks_dir``, ``png_dir``, ``overlay_dir``,
    ``uncertainty_dir``, ``summary``, ``max_pixels``, ``check_inputs``) what is written and which images are
    taken. Their fields may be given as keywords instead, which is what the CLI does. ``strategy`` and ``tta``
    default to what the run's evaluation recorded (:func:`~ensemble.inference.default_strategy`,
    :func:`~ensemble.inference.default_tta`), said on stderr. Images of any size go through sliding windows
    ``step`` tiles apart at ``scale`` input pixels per training pixel; ``max_pixels`` (default a 4096x4096 image)
    refuses larger ones. Progress goes to stderr unless ``quiet``.

    With ``check_inputs`` every image is checked against the image statistics of the run's training tiles
    (``RUN/input_stats.json``): one ``warning: ...`` line on stderr per image out of range, also when ``quiet``
    (a diagnostic, not progress), and the ``summary``'s ``warnings`` column. A run without the file says so on
    stderr once, unless ``quiet``. The masks are the same either way.
    """
    from ..inference.options import InferenceOptions, PredictSettings, split_options
    from ..predict import predict_run

    given = split_options(keywords, options=InferenceOptions, settings=PredictSettings)
    options, tta = _inference_options(options, given["options"])
    settings = (settings or PredictSettings()).replace(**given["settings"])
    said: list[str] = []  # the run and the default strategy are said once the inputs are checked: one error line
    run = default_run(run, said.append)
    strategy = _served_strategy(run, strategy, said.append)
    options = options.replace(tta=_served_tta(run, strategy, tta, said.append))
    return predict_run(run, strategy, data=data, images=images, options=options,
                       settings=settings.replace(notes=said), quiet=quiet)


@api_function
def score(pred: PathArg, masks: PathArg) -> dict[str, Any]:
    """Score predicted masks ``pred`` (submission CSV, .npy, .npz[:KEY]) against true ``masks`` in every convention.

    Returns ``{"competition" | "labeled" | "allpixels": {"soil", "bedrock", "sand", "big_rock", "mean"},
    "tiles": n, "unit": "tiles" | "images", "class0_on_labeled": share}``: ``n`` counts the masks scored, tiles of
    an array or CSV, or whole images of a folder of PNGs (``unit``).
    """
    from ..evaluation.score import score_files

    return score_files(pred, masks)


@api_function
def predictor(run: PathArg | None = None, strategy: str | None = None, *, options: InferenceOptions | None = None,
              check_inputs: bool = True, **keywords: Any) -> Predictor:
    """A :class:`~ensemble.inference.Predictor` for notebooks: load ``run`` once, then ``predict(images)`` (masks),
    ``predict_proba(images)`` and ``predict_logits(images)``; no files.

    ``options`` (:class:`~ensemble.inference.options.InferenceOptions`, or its fields as keywords: ``device``,
    ``tta``, ``batch_size``, ``stack``, ``engine``, ``scale``, ``step``) say how the networks run.
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
    from ..inference import Predictor

    options, tta = _inference_options(options, keywords)
    run = default_run(run, say)
    strategy = _served_strategy(run, strategy)
    made = Predictor(run, strategy, options=options.replace(tta=_served_tta(run, strategy, tta)),
                     check_inputs=check_inputs)
    if check_inputs and made.unchecked_note():
        say(made.unchecked_note())
    return made


@api_function
def export(run: PathArg | None = None, strategy: str | None = None, *, out: PathArg = "model.pt2",
           format: str | None = None, tta: str | None = None) -> dict[str, Any]:
    """Write one program mapping images (N, 1, H, W) to probabilities: a ``torch.export`` program
    (``.pt2``: stacked members + fuser) or an ONNX graph (``.onnx``: members + fuser, or the baseline).

    ``format`` (``pt2`` or ``onnx``) defaults to the extension of ``out``; ``tta="flip"`` bakes the flip into
    the program (default: what the run's evaluation recorded for the strategy).
    """
    from ..inference import Predictor

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
