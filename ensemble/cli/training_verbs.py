"""The verbs that train networks into a run (``train``, ``baseline``, ``control``, ``distill``) and ``fuse``."""
import sys

import click

from .. import api
from ..core.locations import DEFAULT_RUN
from ..reporting.text import format_training_summary
from .group import main
from .options import (
    JOBS_MEMBERS,
    JOBS_NETS,
    STRATEGY_NAMES,
    data_option,
    device_option,
    dispatch_options,
    engine_option,
    quiet_option,
    replicas_option,
    run_option,
    seed_option,
    stack_option,
    stacked_option,
    strategy_option,
    training_options,
)


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
@dispatch_options(JOBS_MEMBERS)
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
@dispatch_options(JOBS_NETS)
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
@dispatch_options(JOBS_NETS)
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
@run_option()
@strategy_option("Fusion strategy to fit, or all of them.", choices=["all", *STRATEGY_NAMES], default="learned")
@data_option
@stack_option
@device_option
@engine_option
@seed_option()
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
    from ..reporting.text import format_fusion_results

    results = api.fuse(run=run, strategy=strategy, data=data, seed=seed, stack=stack, device=device, engine=engine,
                       quiet=quiet)
    click.echo(format_fusion_results(results))
