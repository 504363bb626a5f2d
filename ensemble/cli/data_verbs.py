"""``ensemble data inspect`` and ``ensemble data clean``: look at a data file, and copy it without outlier tiles."""
import json

import click

from .. import api
from ..reporting.text import format_summary
from .group import main
from .options import data_option, json_option, out_option, outlier_options


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
@json_option("Print the summary as JSON.")
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
@out_option("Where to write the cleaned .npz.", required=True)
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
