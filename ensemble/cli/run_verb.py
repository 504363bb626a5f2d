"""``ensemble run``: the main job, composed of the options of the steps it runs."""
import click

from .. import api
from .group import main
from .options import (
    JOBS_RUN,
    data_option,
    dispatch_options,
    engine_option,
    evaluation_options,
    quiet_option,
    recipe_options,
    replicas_option,
    run_option,
    seed_option,
    stacked_option,
    tensorboard_option,
)


@main.command("run")
@recipe_options
@dispatch_options(JOBS_RUN)
@stacked_option
@replicas_option
@click.option("--control", "with_control", is_flag=True,
              help="Also train the ensembling control (5 multiclass nets of the members' width) and score it.")
@click.option("--distill", "with_student", is_flag=True,
              help="Also distil the served model into one multiclass net (the student; ensemble distill), fit "
                   "student_bias, and evaluate again.")
@evaluation_options
@engine_option
@tensorboard_option
@quiet_option
@seed_option(training=True)
@run_option()
@data_option
def run_command(**options):
    """The main job: train members and baseline, fuse every strategy, evaluate, print the table.

    The options are those of the steps (train, baseline, control, fuse, evaluate) it runs. Every
    network (members, baseline, --replicas, --control) trains in one dispatch: --jobs at once, or on
    the Dask cluster with --backend dask; --stacked trains the members stacked first, then the others.

    \b
    Example:
      ensemble run --preset quick
      ensemble run --preset full --run runs/full --replicas 2 --control --ablation
    """
    result = api.run_all(**run_arguments(options))
    from ..reporting.text import format_table

    click.echo(format_table(result["table"]))
    click.echo(f"report: {result['report_md']}")
    if result.get("note"):
        click.echo(result["note"])


def run_arguments(options):
    """The arguments of :func:`ensemble.api.run_all` from the command's options: the evaluation's and the student's
    apart, every other one a training option."""
    options = dict(options)
    evaluate_options = {key: options.pop(key) for key in ("cross_fit", "ablation", "tta_gain")}
    distill_options = {} if options.pop("with_student") else None
    return {**options, "evaluate_options": evaluate_options, "distill_options": distill_options}
