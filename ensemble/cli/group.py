"""The ``ensemble`` command group: one ``Error:`` line and exit status 2 for bad input, the messages on stderr."""
import os
import sys
import warnings

import click

from .. import __version__
from ..core.errors import EnsembleError
from ..core.logs import console
from ..core.wording import called_from_cli


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
