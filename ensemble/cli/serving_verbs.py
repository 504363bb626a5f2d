"""The verbs that use a trained run: ``evaluate``, ``predict``, ``export``, and ``status`` and ``score``."""
import json

import click

from .. import api
from ..core.locations import DEFAULT_RUN
from .group import main, passive_openmp
from .options import (
    RUN_READ,
    RUN_TRAINED,
    STRATEGY_NAMES,
    ablation_option,
    batch_size_option,
    cross_fit_option,
    curve_option,
    data_option,
    device_option,
    engine_option,
    json_option,
    masks_option,
    max_pixels_option,
    out_option,
    quiet_option,
    run_option,
    seed_option,
    stack_option,
    step_option,
    strategy_option,
    tta_gain_option,
    tta_option,
)


@main.command()
@run_option(RUN_TRAINED)
@data_option
@tta_option()
@out_option("Report folder [default: RUN/evaluation].")
@cross_fit_option
@stack_option
@device_option
@engine_option
@seed_option()
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
@step_option("With --frames: the sliding-window step as a fraction of the tile, in (0, 1].")
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
    from ..reporting.text import format_table

    click.echo(format_table(result["table"]))
    click.echo(f"report: {result['report_md']}")


@main.command()
@run_option(RUN_TRAINED)
@strategy_option(f"A fuser of the run ({', '.join(STRATEGY_NAMES)}), baseline or control "
                 "[default: the run's best recorded by ensemble evaluate, else learned; said on stderr].")
@data_option
@click.option("--images", type=click.Path(exists=False), default=None,
              help="Images to predict instead of --data's test_set: an image file (PNG, JPEG, TIFF), a folder of "
                   "them (any sizes), or an .npz (test_set or images (N, H, W), or single images by key).")
@out_option("Kaggle submission CSV to write (tiles of the run's size only) [default: submission.csv, unless only "
            "per-image outputs are asked for].")
@masks_option("Write each image's class-id mask here: <id>.png, mode L, pixel values 0-4, at the image's size.")
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
@step_option("Sliding-window step as a fraction of the run's tile, in (0, 1]; windows are Gaussian-weighted.")
@max_pixels_option
@tta_option(served=True)
@batch_size_option
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
@run_option(RUN_READ)
@json_option("Print a JSON list, one object per network.")
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
    from ..reporting.status import status_lines

    statuses = api.status(run)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        click.echo("\n".join(status_lines(run or DEFAULT_RUN, statuses)))


@main.command("score")
@click.argument("pred", type=click.Path())
@masks_option("True masks: .npy/.npz with one (N, H, W) integer array (FILE.npz:KEY picks one of several), or a "
              "Kaggle-layout .npz (its training_set[:, 1]); for a PRED folder of class-id PNGs also a folder of "
              "them or an .npz of single masks, matched by stem.", dest="masks", required=True, metavar="TRUTH")
@json_option("Print one JSON object {competition, labeled, allpixels}, each with soil, bedrock, sand, big_rock and "
             "mean.")
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
    from ..core.metrics import CONVENTIONS
    from ..reporting.report import json_ready
    from ..reporting.text import format_scores

    scores = api.score(pred, masks)
    if as_json:
        click.echo(json.dumps(json_ready({c: scores[c] for c in CONVENTIONS}), indent=2))
    else:
        click.echo(format_scores(scores))


@main.command("export")
@run_option(RUN_TRAINED)
@strategy_option(f"A fuser of the run to bake in ({', '.join(STRATEGY_NAMES)}), or one network: baseline, student "
                 "[default: the run's best recorded by ensemble evaluate, else learned; said on stderr].")
@click.option("--format", "format", type=click.Choice(["pt2", "onnx"]), default=None,
              help="pt2: a torch.export program; onnx: an ONNX graph [default: from --out's extension].")
@out_option("Where to write the program [default: model.pt2, or model.onnx with --format onnx].")
@tta_option(served=True)
def export_command(*, run, strategy, format, out, tta):
    """Export members + fuser (or one network: the baseline, the student) as one program: .pt2 (torch.export) or .onnx.

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
