"""The ``ensemble`` command: a thin click layer over :mod:`ensemble.api`.

Only light modules are imported at start-up, so ``ensemble --help`` answers at once; the
commands import torch and the modules that need it when they run.
"""
import json
import os
import sys
import warnings

import click

from . import __version__, api
from .core.defaults import BACKENDS, BATCH_SIZE, CROSS_FIT_FOLDS, DEFAULT_BACKEND, DEFAULT_STEP, MAX_PIXELS
from .core.errors import EnsembleError
from .core.locations import DEFAULT_RUN
from .core.logs import console
from .core.objectives import OBJECTIVES
from .core.outliers import MIN_REPEATS, UNIFORM_SHARE
from .core.split import VAL_FRACTION
from .core.wording import called_from_cli
from .reporting.text import format_summary, format_training_summary

#: The fusion strategies (``fusion.STRATEGIES``, spelled out so the CLI starts without importing torch;
#: tests/test_cli.py checks they agree).
STRATEGY_NAMES = ("argmax", "bias", "calibrated", "learned", "learned3x3", "baseline_bias", "hybrid", "stacked",
                  "baseline_pair", "baseline_pair_bias", "student_bias", "vote")


class EnsembleGroup(click.Group):
    """A click group that turns :class:`EnsembleError` into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            with called_from_cli(), console(command=True):
                return super().invoke(ctx)
        except EnsembleError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


def passive_openmp():
    """Let PyTorch's OpenMP threads sleep between parallel regions, unless ``$OMP_WAIT_POLICY`` says otherwise.

    Inference alternates onnxruntime sessions with PyTorch work (fusers, window stitching) on the same
    cores; spinning OpenMP threads starve the sessions (docs/performance.md, Whole frames). It takes
    effect only before torch is loaded, which the inference commands do after this.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


def data_option(func):
    """``--data PATH``: the Kaggle-layout .npz (default: $MARS_DATA or ../shared/data)."""
    return click.option(
        "--data",
        "data",
        type=click.Path(dir_okay=False),
        default=None,
        help="Kaggle-layout .npz [default: $MARS_DATA, else ../shared/data/ai4mars-64x128.npz beside the "
             "checkout or the working directory].",
    )(func)


def seed_option(func):
    """``--seed S``: the random seed."""
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")(
        func
    )


def quiet_option(func):
    """``--quiet``: no progress output."""
    return click.option("--quiet", is_flag=True, help="Print no progress, only results and errors.")(func)


def device_option(func):
    """``--device auto|cpu|cuda``: where the networks run."""
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help="Where the networks run (auto: a CUDA GPU when present, else the CPU).")(func)


def engine_option(func):
    """``--engine auto|torch|onnxruntime``: what runs the networks (:mod:`ensemble.inference.engines`)."""
    return click.option("--engine", type=click.Choice(["auto", "torch", "onnxruntime"]), default="auto",
                        show_default=True,
                        help="What runs the networks: auto = onnxruntime on the CPU when installed (faster), "
                             "else PyTorch.")(func)


def stack_option(func):
    """``--stack/--no-stack``: members as one grouped network or one by one; default: the faster, measured."""
    return click.option("--stack/--no-stack", "stack", default=None,
                        help="Run the members stacked as one grouped network, or one by one (same logits within "
                             "1e-5) [default: stacked on a GPU, one by one on the CPU, where the whole predict "
                             "command measured faster so with either engine].")(func)


def outlier_options(func):
    """Options of the outlier detector."""
    func = click.option(
        "--uniform-share",
        type=click.FloatRange(0.0, 1.0),
        default=UNIFORM_SHARE,
        show_default=True,
        help="A repeated mask whose top class covers this share of labeled pixels is kept.",
    )(func)
    return click.option(
        "--min-repeats",
        type=click.IntRange(min=2),
        default=MIN_REPEATS,
        show_default=True,
        help="A mask shared by at least this many tiles is suspect.",
    )(func)


@click.group(cls=EnsembleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ensemble")
def main():
    """Mars terrain segmentation with an ensemble of one-vs-rest U-Nets.

    Which run: every verb works on --run, runs/default when it is not given (said), so verbs
    run with their defaults agree on one run. evaluate, predict and export use the shipped
    reference run while runs/default holds no run; --run reference names it. Shipped runs are
    read-only: nothing is written into them.

    \b
    Example:
      ensemble data inspect
      ensemble run --preset quick
      ensemble predict --run reference --out submission.csv
    """
    warnings.showwarning = _show_warning


@main.group()
def data():
    """Inspect and clean a Kaggle-layout data file.

    \b
    Example:
      ensemble data inspect --data mars_for_students.npz
    """


@data.command("inspect")
@data_option
@outlier_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def data_inspect(data, min_repeats, uniform_share, as_json):
    """Print tile counts, size, class shares, groups and outliers.

    \b
    Example:
      ensemble data inspect --data ../shared/data/ai4mars-64x128.npz
    """
    summary = api.inspect_data(data, min_repeats=min_repeats, uniform_share=uniform_share)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@data.command("clean")
@data_option
@click.option("--out", required=True, type=click.Path(), help="Where to write the cleaned .npz.")
@outlier_options
def data_clean(data, out, min_repeats, uniform_share):
    """Write a copy of the data without outlier tiles (same keys, groups and ids aligned).

    \b
    Example:
      ensemble data clean --data mars_for_students.npz --out mars_clean.npz
    """
    result = api.clean_data(out, data, min_repeats=min_repeats, uniform_share=uniform_share)
    reasons = ", ".join(f"{k}: {v}" for k, v in result["reasons"].items()) or "none"
    click.echo(f"kept {result['kept']} tiles, removed {result['removed']} ({reasons}); wrote {result['out']}")


def run_option(func):
    """``--run RUN``: the run folder a verb writes, by the one rule of :mod:`ensemble.core.locations`."""
    return click.option(
        "--run", "run", type=click.Path(), default=None,
        help="Run folder, created if missing; an existing one is continued [default: runs/default, said].",
    )(func)


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="[SCOPE:]KEY=VALUE",
    help="Override a training setting of the recipe, repeatable: KEY a training-config field "
         "(lr, schedule, warmup_epochs, min_lr_ratio, ema_decay, weight_decay, batch_size, patience, "
         "sampler_weight, model.dropout, augment.rotate_degrees, ...), VALUE JSON or a word; SCOPE "
         "(members, baseline or a class name) limits it to those networks. Recorded in the run's config.json.")


objective_option = click.option(
    "--objective", type=click.Choice(OBJECTIVES), default=None,
    help="What the run is trained for, fixed when it is created [default: the run's, else competition]. "
         "competition: the AN2DL metric (unlabeled pixels ignored in losses, fusion and scores; class 0 never "
         "predicted); fullmask: a full 5-class mask scored on every pixel.")


val_fraction_option = click.option(
    "--val-fraction", type=click.FloatRange(0.01, 0.9), default=None,
    help=f"Share of tiles (whole rover stops) held out for validation [default: --config's settings.val_fraction, "
         f"else {VAL_FRACTION}].")
training_seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=None,
    help="Random seed of the run [default: --config's settings.seed, else 0].")
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Recipe file, .toml or .json, with the keys of --set and of a run's config.json: [settings] (seed, "
         "val_fraction, objective), training keys for every network (lr = 0.003, model.dropout = 0.1), a table "
         "per --set scope ([members], [baseline], [big_rock], ...), [networks.NAME] (a network's whole recorded "
         "config) and init_from. A run's own config.json reproduces that run. Precedence: preset < file < --set < "
         "options given here (--epochs, --width, --seed, ...). Recorded in the run's config.json like --set.")
init_from_option = click.option(
    "--init-from", "init_from", default=None, metavar="RUN",
    help="Start each network from the best.pt of the network with the same name in RUN (a run folder, or "
         "'reference' for the shipped run, read-only): the weights only, with a fresh optimiser, schedule and the "
         "epochs of this run. Every network must be in RUN with the same architecture, else nothing starts. A "
         "network already started resumes from its own latest.pt. Recorded (RUN and each best.pt's sha256) in "
         "config.json and manifest.json.")
backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND, show_default=True,
    help="How --jobs > 1 networks train at once: processes (workers forked from a process that has imported "
         "torch), loky or threading (joblib's), or dask (the cluster at --scheduler).")
scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDRESS",
    help="Dask scheduler address for --backend dask (workers must see --data and --run).")
stacked_option = click.option(
    "--stacked", is_flag=True,
    help="Train all members in one process as one grouped network (each keeps its own loss, "
         "sampler, learning rate and early stopping); fastest on a GPU.")
replicas_option = click.option(
    "--replicas", type=click.IntRange(min=1), default=1, show_default=True,
    help="Multiclass nets of the baseline's width to train, each with a seed of its own: 2 adds "
         "baseline_1, which ensemble evaluate soft-votes with the baseline (baseline_pair).")
cross_fit_option = click.option(
    "--cross-fit", "cross_fit", type=click.IntRange(min=0), default=CROSS_FIT_FOLDS, show_default=True,
    help="Score each strategy out of fold: refit its fuser this many times, each time without one "
         "fold of validation rover stops (0: score the saved fusers on the tiles they were fitted on).")
curve_option = click.option(
    "--curve", is_flag=True,
    help="Add the budget curve: every model scored at its snapshot epochs (the recipe's "
         "snapshot_fractions) against training time and tiles seen; budget_curve.png and a report table.")
ablation_option = click.option(
    "--ablation", is_flag=True, help="Also score the hybrid with each member left out in turn (which specialists "
                                     "it needs).")
tta_gain_option = click.option(
    "--tta-gain", "tta_gain", is_flag=True,
    help="Also score every served model with flip TTA and record where it helps (interval above 0): "
         "predict, export and the API then serve that model with the flip by default.")


tensorboard_option = click.option(
    "--tensorboard", is_flag=True,
    help="Also log every epoch (losses, scores, learning rate, the progress figure) to RUN/tensorboard/ for "
         "TensorBoard (needs the extra: pip install 'mars-ensemble[tensorboard]'). RUN/progress.png and each "
         "network's history.csv are written either way.")


def training_options(func):
    """Options shared by ``train`` and ``baseline``."""
    options = [
        click.option("--preset", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
                     help="quick: minutes, shows the pipeline; full: the best-quality recipe (< 2 h on 2 cores)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the preset's epochs."),
        click.option("--samples-per-epoch", type=click.IntRange(min=0), default=None,
                     help="Tiles drawn per epoch (0: every training tile) [default: the preset's]."),
        click.option("--width", type=click.IntRange(min=1), default=None,
                     help="Channels of the first level (members; for baseline: its own width, "
                          "default matched to the members' parameter count)."),
        device_option,
        val_fraction_option,
        objective_option,
        set_option,
        config_option,
        init_from_option,
        click.option("--loss", type=click.Choice(["bce_dice", "focal_dice", "ce", "focal"]), default=None,
                     help="Loss [members: bce_dice or focal_dice; baseline: ce or focal]."),
        tensorboard_option, quiet_option, training_seed_option, run_option, data_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _report_training(results, run):
    click.echo(format_training_summary(results))
    click.echo(f"run: {run or DEFAULT_RUN}")
    failed = [r for r in results if r.get("failed")]
    for r in failed:
        click.echo(f"Error: {r['name']} failed: {r['error']}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@training_options
@click.option("--members", default="all", show_default=True,
              help="Members to train: all, or comma-separated class names (background,soil,bedrock,sand,big_rock).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Members trained at once; each gets cores // jobs torch threads "
                   "[default: one per core, at most one per member; with more members than cores, enough "
                   "that every round fills the cores (5 members on 2 cores: 3 at once, then 2); 1 with --stacked].")
@backend_option
@scheduler_option
@stacked_option
def train(**options):
    """Train the one-vs-rest member U-Nets (in parallel with --jobs, or --stacked).

    Rerunning the same command skips finished members and continues unfinished ones
    from their latest checkpoint, stacked or not.

    \b
    Example:
      ensemble train --preset quick --jobs 2
      ensemble train --preset quick --stacked
    """
    _report_training(api.train(**options), options["run"])


@main.command()
@training_options
@replicas_option
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Nets trained at once [default: as for train, counting only unfinished nets].")
@backend_option
@scheduler_option
def baseline(*, replicas, **options):
    """Train the single multiclass U-Net the ensemble is compared against.

    Same data, split, augmentation and epochs as the members; its width is matched
    so its parameter count is within 15 % of the five members together. --replicas 2
    adds a second such net (another seed): the multiclass model at twice the budget.

    \b
    Example:
      ensemble baseline --preset quick
      ensemble baseline --preset full --run runs/full --replicas 2
    """
    result = api.baseline(replicas=replicas, **options)
    _report_training(result if isinstance(result, list) else [result], options["run"])


@main.command()
@training_options
@click.option("--size", type=click.IntRange(min=2), default=5, show_default=True,
              help="Multiclass nets in the control.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Nets trained at once [default: as for train, counting only unfinished nets].")
@backend_option
@scheduler_option
def control(*, size, **options):
    """Train the ensembling control: multiclass U-Nets of the members' width, seeds apart.

    Is a gain from the one-vs-rest decomposition or from averaging five networks? The
    control spends the members' parameters and budget on --size multiclass nets trained
    like the baseline; ensemble evaluate scores their softmax average as the control row.

    \b
    Example:
      ensemble control --preset quick
    """
    _report_training(api.control(size=size, **options), options["run"])


@main.command()
@training_options
@click.option("--teacher", default=None,
              help="Served strategy of the run the student learns from [default: --config's or --set's "
                   "distill.teacher, else the run's served default].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=None,
              help="Weight of the labels' loss; the teacher's term gets 1 - alpha [default: --config's or --set's "
                   "distill.alpha, else 0.5].")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Softmax temperature of the teacher's and the student's distributions [default: --config's or "
                   "--set's distill.temperature, else 2].")
@click.option("--unlabeled", default=None, metavar="PATH",
              help="Images the student also learns from, through the teacher alone: PATH.npz:KEY, an image, a "
                   "folder of images or a .txt list of image paths; cut into tiles at the training scale. The "
                   "data file's test_set is used only when named (transductive).")
@click.option("--unlabeled-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="The --scale of the --unlabeled images (1: already at the training tiles' scale).")
def distill(**options):
    """Distil the run's served model into one multiclass U-Net (the student).

    The student has the baseline's architecture and width unless --width says otherwise and learns from
    the labels and, on every pixel (labeled or not), from the teacher's logits of the clean tile, while it
    sees the tile augmented like any network of the run. The teacher's logits are computed once and cached
    in the user's cache folder, never in the run.

    \b
    Example:
      ensemble distill --run runs/full --preset full
      ensemble distill --teacher hybrid --alpha 0.3 --temperature 1
    """
    _report_training([api.distill(**options)], options["run"])


@main.command()
@run_option
@click.option("--strategy", type=click.Choice(["all", *STRATEGY_NAMES]),
              default="learned", show_default=True, help="Fusion strategy to fit, or all of them.")
@data_option
@stack_option
@device_option
@engine_option
@seed_option
@quiet_option
def fuse(*, run, strategy, data, stack, device, engine, seed, quiet):
    """Fit a fuser on the members' validation logits and save it to RUN/fusion/<strategy>.pt.

    The members' logits of the validation tiles (never used to train them) are
    computed once and cached in RUN/cache, so refitting takes seconds. Prints the
    fitted parameters, NLL and ECE before and after, and the fused validation IoU.

    \b
    Example:
      ensemble fuse --strategy all
    """
    from .reporting.text import format_fusion_results

    results = api.fuse(run=run, strategy=strategy, data=data, seed=seed, stack=stack, device=device, engine=engine,
                       quiet=quiet)
    click.echo(format_fusion_results(results))


def optional_run_option(func):
    """``--run RUN`` of a verb that needs a trained run (the rule of :mod:`ensemble.core.locations`)."""
    return click.option("--run", "run", type=click.Path(), default=None,
                        help="Run folder, or 'reference' for the shipped run [default: runs/default, or the "
                             "shipped reference run while runs/default holds no run; said].")(func)


def tta_option(func):
    """``--tta none|flip``."""
    return click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
                        help="Test-time augmentation: average with the horizontal mirror.")(func)


def served_tta_option(func):
    """``--tta none|flip`` defaulting to what the run's evaluation recorded for the strategy."""
    return click.option("--tta", type=click.Choice(["none", "flip"]), default=None,
                        help="Test-time augmentation: average with the horizontal mirror [default: flip where "
                             "ensemble evaluate --tta-gain found it helps the strategy, else none; said on "
                             "stderr].")(func)


@main.command()
@optional_run_option
@data_option
@tta_option
@click.option("--out", type=click.Path(), default=None,
              help="Report folder [default: RUN/evaluation].")
@cross_fit_option
@stack_option
@device_option
@engine_option
@seed_option
@quiet_option
@curve_option
@ablation_option
@click.option("--curve-from", "curve_from", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Reuse the budget curve of an earlier evaluation (its budget_curve.json) instead of --curve, "
                   "for a run whose snapshots are not at hand (the shipped run ships none).")
@tta_gain_option
@click.option("--frames", is_flag=True,
              help="Also score the validation images as whole frames rebuilt from their :top/:bottom tiles, "
                   "predicted by sliding windows, beside tile by tile (paired intervals).")
@click.option("--step", type=float, default=DEFAULT_STEP, show_default=True,
              help="With --frames: the sliding-window step as a fraction of the tile, in (0, 1].")
@click.option("--robustness", is_flag=True,
              help="Also run the robustness benchmark: the baseline, the bias-tuned baseline and the served default "
                   "on the validation tiles under 13 corruptions (noise, JPEG, blur, exposure, resampling) at 3 "
                   "severities; robustness.png and report sections.")
@click.option("--corruptions", default=None,
              help="With --robustness: only these corruptions, comma-separated (e.g. jpeg,gaussian_noise) "
                   "[default: all].")
def evaluate(**options):
    """Per-class IoU of every fused strategy, each member alone and the baseline, on the same tiles.

    The saved fusers were fitted on the validation tiles, so each strategy is scored
    cross-fitted: every tile by a copy of its fuser fitted without that tile's fold of
    rover stops. Writes report.md, report.json, a confusion-matrix PNG per model and an
    overlay sheet of the tiles where ensemble and baseline differ most. A run with an
    ensembling control (ensemble control) gets a control row.

    \b
    Example:
      ensemble evaluate --tta flip
      ensemble evaluate --run runs/full --curve
    """
    passive_openmp()
    result = api.evaluate(**options)
    from .reporting.text import format_table

    click.echo(format_table(result["table"]))
    click.echo(f"report: {result['report_md']}")


@main.command()
@optional_run_option
@click.option("--strategy", default=None,
              help=f"A fuser of the run ({', '.join(STRATEGY_NAMES)}), baseline or control "
                   "[default: the run's best recorded by ensemble evaluate, else learned; said on stderr].")
@data_option
@click.option("--images", type=click.Path(exists=False), default=None,
              help="Images to predict instead of --data's test_set: an image file (PNG, JPEG, TIFF), a folder of "
                   "them (any sizes), or an .npz (test_set or images (N, H, W), or single images by key).")
@click.option("--out", type=click.Path(), default=None,
              help="Kaggle submission CSV to write (tiles of the run's size only) [default: submission.csv, "
                   "unless only per-image outputs are asked for].")
@click.option("--masks", "masks_dir", type=click.Path(), default=None,
              help="Write each image's class-id mask here: <id>.png, mode L, pixel values 0-4, at the image's size.")
@click.option("--png", "png_dir", type=click.Path(), default=None, help="Also write coloured mask PNGs here.")
@click.option("--overlay", "overlay_dir", type=click.Path(), default=None,
              help="Write each image with its class colours blended in and a legend here.")
@click.option("--uncertainty", "uncertainty_dir", type=click.Path(), default=None,
              help="Also write per-pixel entropy and member-disagreement PNGs here.")
@click.option("--summary", type=click.Path(), default=None,
              help="Write every image's class shares of its pixels to this .csv or .json file, with a warnings "
                   "column (the input check's findings; empty when none).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Input pixels per training pixel: 2 for AI4Mars' 256x256 copies, 8 for full 1024x1024 NavCam "
                   "frames (images are area-downsampled before the networks, logits upsampled back).")
@click.option("--step", type=float, default=DEFAULT_STEP, show_default=True,
              help="Sliding-window step as a fraction of the run's tile, in (0, 1]; windows are Gaussian-weighted.")
@click.option("--max-pixels", "max_pixels", type=int, default=MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels than this, before any work.")
@served_tta_option
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True,
              help="Tiles (windows) per batch (the default is the fastest on a CPU; try 64 or more on a GPU).")
@stack_option
@device_option
@engine_option
@quiet_option
def predict(**options):
    """Predict masks: a Kaggle submission (id,0,1,...,H*W-1; row-major labels) and/or per-image outputs.

    Images of any size are covered by Gaussian-weighted sliding windows of the run's tile
    size; every output is at the image's own resolution and named by its file stem.

    Each image, at the training scale, is checked against the run's training tiles (noise,
    blur, JPEG blocks, exposure, size for --scale): one "warning:" line on stderr per image
    out of range, also with --quiet. The masks are predicted all the same.

    \b
    Examples:
      ensemble predict --strategy learned --out submission.csv --png masks/
      ensemble predict --images frames/ --scale 8 --masks masks/ --overlay overlays/ --summary shares.csv
    """
    passive_openmp()
    result = api.predict(**options)
    if result["out"] is not None:
        click.echo(f"wrote {result['rows']} rows to {result['out']} ({result['strategy']})")
    else:
        click.echo(f"predicted {result['images']} images ({result['strategy']})")


@main.command("status")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/default].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per network.")
def status_command(*, run, as_json):
    """Say where a run stands, while it trains or after: each network done, running, stopped or queued, with its
    epoch, best validation score (epoch), seconds per epoch and ETA.

    Running means a process holds the network's training lock now; stopped means it started and nobody trains it
    (the same training command resumes it). Each network's epochs are in its history.csv, all of them drawn in
    RUN/progress.png.

    \b
    Example:
      ensemble status --run runs/full
    """
    from .reporting.status import status_lines

    statuses = api.status(run)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        click.echo("\n".join(status_lines(run or DEFAULT_RUN, statuses)))


@main.command("score")
@click.argument("pred", type=click.Path())
@click.option("--masks", required=True, metavar="TRUTH",
              help="True masks: .npy/.npz with one (N, H, W) integer array (FILE.npz:KEY picks one of several), "
                   "or a Kaggle-layout .npz (its training_set[:, 1]); for a PRED folder of class-id PNGs also a "
                   "folder of them or an .npz of single masks, matched by stem.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object {competition, labeled, allpixels}, each with soil, bedrock, sand, "
                   "big_rock and mean.")
def score_command(*, pred, masks, as_json):
    """Score predicted masks (a submission CSV, .npy/.npz class ids, or a folder of class-id PNGs) against true masks.

    Prints per-class IoU and the mean in the three conventions: competition (keras
    MeanIoU(num_classes=5, ignore_class=0), what AN2DL scores), labeled (same pixels, mean over
    classes 1-4) and allpixels (every pixel counts).

    \b
    Example:
      ensemble score submission.csv --masks heldout_masks.npy
      ensemble score pred.npz:masks --masks mars_for_students.npz --json
      ensemble score masks/ --masks true_masks/
    """
    from .core.metrics import CONVENTIONS
    from .reporting.report import json_ready
    from .reporting.text import format_scores

    scores = api.score(pred, masks)
    if as_json:
        click.echo(json.dumps(json_ready({c: scores[c] for c in CONVENTIONS}), indent=2))
    else:
        click.echo(format_scores(scores))


@main.command("run")
@click.option("--preset", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="quick: minutes, shows the pipeline; full: the best-quality recipe.")
@data_option
@click.option("--run", "run", type=click.Path(), default=None,
              help="Run folder, created if missing; an existing one is continued [default: runs/default, said].")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Networks trained at once [default: as for train, over every network of the run not finished].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the preset's epochs.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Override the members' width.")
@click.option("--samples-per-epoch", type=click.IntRange(min=0), default=None,
              help="Tiles drawn per epoch (0: every training tile) [default: the preset's].")
@val_fraction_option
@objective_option
@set_option
@config_option
@init_from_option
@stacked_option
@backend_option
@scheduler_option
@replicas_option
@click.option("--control", "with_control", is_flag=True,
              help="Also train the ensembling control (5 multiclass nets of the members' width) and score it.")
@click.option("--distill", "with_student", is_flag=True,
              help="Also distil the served model into one multiclass net (the student; ensemble distill), fit "
                   "student_bias, and evaluate again.")
@cross_fit_option
@curve_option
@ablation_option
@tta_gain_option
@device_option
@engine_option
@tensorboard_option
@training_seed_option
@quiet_option
def run_command(*, preset, data, run, jobs, epochs, width, samples_per_epoch, val_fraction, objective, overrides,
                config, init_from, stacked, backend, scheduler, replicas, with_control, with_student, cross_fit, curve,
                ablation, tta_gain, device, engine, tensorboard, seed, quiet):
    """The main job: train members and baseline, fuse every strategy, evaluate, print the table.

    The options are those of the steps (train, baseline, control, fuse, evaluate) it runs. Every
    network (members, baseline, --replicas, --control) trains in one dispatch: --jobs at once, or on
    the Dask cluster with --backend dask; --stacked trains the members stacked first, then the others.

    \b
    Example:
      ensemble run --preset quick
      ensemble run --preset full --run runs/full --replicas 2 --control --ablation
    """
    result = api.run_all(preset=preset, data=data, run=run, jobs=jobs, seed=seed, quiet=quiet, epochs=epochs,
                         width=width, samples_per_epoch=samples_per_epoch, val_fraction=val_fraction,
                         objective=objective, device=device, engine=engine, overrides=overrides, config=config,
                         init_from=init_from, tensorboard=tensorboard, with_control=with_control, curve=curve,
                         replicas=replicas,
                         members_options=dict(stacked=stacked, backend=backend, scheduler=scheduler),
                         evaluate_options=dict(cross_fit=cross_fit, ablation=ablation, tta_gain=tta_gain),
                         distill_options={} if with_student else None)
    from .reporting.text import format_table

    click.echo(format_table(result["table"]))
    click.echo(f"report: {result['report_md']}")
    if result.get("note"):
        click.echo(result["note"])


@main.command("export")
@optional_run_option
@click.option("--strategy", default=None,
              help=f"A fuser of the run to bake in ({', '.join(STRATEGY_NAMES)}), or baseline (ONNX only) "
                   "[default: the run's best recorded by ensemble evaluate, else learned; said on stderr].")
@click.option("--format", "format", type=click.Choice(["pt2", "onnx"]), default=None,
              help="pt2: a torch.export program; onnx: an ONNX graph [default: from --out's extension].")
@click.option("--out", type=click.Path(), default=None,
              help="Where to write the program [default: model.pt2, or model.onnx with --format onnx].")
@served_tta_option
def export_command(*, run, strategy, format, out, tta):
    """Export members + fuser (or the baseline) as one program: .pt2 (torch.export) or .onnx.

    The program maps images (N, 1, H, W) float 0-1 to class probabilities (N, 5, H, W)
    for any N. A .pt2 loads with torch alone: torch.export.load(PATH).module(); an .onnx
    runs in onnxruntime: InferenceSession(PATH).run(None, {"images": x})[0].

    \b
    Examples:
      ensemble export --strategy learned --out model.pt2
      ensemble export --format onnx --out model.onnx
    """
    out = out or f"model.{format or 'pt2'}"
    result = api.export(run=run, strategy=strategy, out=out, format=format, tta=tta)
    click.echo(f"wrote {result['out']} ({result['strategy']} fusion, tta {result['tta']}, "
               f"tiles {result['tile_shape'][0]}x{result['tile_shape'][1]})")
