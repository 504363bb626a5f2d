"""Comparison report: baseline vs ensemble strategies, as report.json, report.md and a terminal table.

The ``table`` built by :func:`build_table` is plain data (JSON-ready apart from NaN)::

    {
      "baseline": "baseline",
      "objective": "competition" | "fullmask",       # what the run was trained for
      "headline": "competition" | "allpixels",       # the convention that scores it
      "order": ["baseline", "argmax", ...],          # row order, baseline first
      "models": {name: {"iou": {"soil": v, "bedrock": v, "sand": v, "big_rock": v},  # headline convention
                        "miou": {"competition": v, "labeled": v, "allpixels": v},
                        "pixel_accuracy": v,          # on the pixels the headline scores
                        "background_on_labeled": v,   # share of labeled pixels predicted 0
                        "ece": v, "n_tiles": int}},
      "differences": {name: {column: {"value", "diff", "low", "high"}}},  # non-baseline models
      "tuned_baseline": "baseline_bias",             # when scored: the baseline with tuned class offsets
      "tuned_differences": {name: {column: ...}},    # every other model minus the tuned baseline
      "members": {class_name: binary_iou},
      "bootstrap": {"n_boot": int, "seed": int, "alpha": float, "method": str},
      "best_strategy": name,                         # evaluate: what predict serves by default
      "budgets": [{"budget": str, "rows": [{"model", "miou", "networks", "minutes"}],
                   "differences": [{"model", "minus", "diff", "low", "high"}]}],   # evaluate: equal compute
      "ablation": [{"variant": "without soil" | "weight fitted", "miou", "vs_full", "vs_tuned_baseline"}],
      "tta_gain": {"rows": [{"model", "miou_none", "miou_flip", "diff", "low", "high", "default"}],
                   "defaults": {name: "none" | "flip"}},  # evaluate --tta-gain: each model's served TTA
      "robustness": {"headline", "n_tiles", "seed", "middle_severity", "families", "corruptions": [...],
                     "models": {name: {"clean", "clean_iou", "rows": [{"corruption", "family", "severity",
                                "parameter", "trained", "miou", "iou", "drop": {"diff", "low", "high"}}],
                                "all" | "trained" | "held_out" | "middle" | ...: {"mpc", "rpc", "n", "worst"}}}},
                                                    # evaluate --robustness: ensemble.evaluation.robustness
    }


NaN (a class absent from truth and prediction, or a missing ECE) prints as ``n/a`` and is
stored as ``null`` in report.json.
"""
import math
from pathlib import Path

import numpy as np

from ..core.fileio import write_json_atomic, write_text_atomic
from .text import (
    COLUMNS,
    ROBUSTNESS_SUMMARY_HEADERS,
    ablation_rows,
    budget_difference_rows,
    budget_rows,
    curve_rows,
    difference_headers,
    difference_rows,
    fmt,
    frame_rows,
    markdown_table,
    metric_rows,
    robustness_row_headers,
    robustness_rows,
    robustness_summary_rows,
    tta_gain_rows,
)

_META_KEYS = (("run", "run"), ("objective", "objective"), ("data_sha", "data sha256"), ("split", "split"),
              ("n_tiles", "tiles"), ("tta", "TTA"), ("fusers_fitted_on", "fusers fitted on"),
              ("engine", "inference engine"), ("training_threads", "torch threads per network in training"))



def smoke_run_line(shipped_table, shipped_report):
    """The line a quick run's table ends with: what the shipped full run measured for its served default, the
    tuned baseline and the baseline (read from its report), so a smoke run is not taken for the result."""
    headline = shipped_table["headline"]
    names = [n for n in dict.fromkeys([shipped_table.get("best_strategy"), "baseline_bias", shipped_table["baseline"]])
             if n in shipped_table["models"]]
    scores = ", ".join(f"{n} {fmt(shipped_table['models'][n]['miou'][headline])}" for n in names)
    return (f"This is a smoke run (quick preset: a few short epochs). The shipped full run measured {scores} "
            f"(mIoU {headline}, {shipped_report}).")


def json_ready(value):
    """Recursively turn numpy scalars/arrays into Python values and NaN/inf into None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _section(title, text, headers, rows):
    """Markdown lines of one report section: its title, what it shows, its table."""
    return [f"## {title}", "", text, "", markdown_table(headers, rows), ""]


def _markdown(out_dir, table, meta):
    boot = table["bootstrap"]
    level = round(100 * (1 - boot["alpha"]))
    parts = ["# Mars terrain segmentation: ensemble vs baseline", ""]
    parts += [f"- **{label}**: {meta[key]}" for key, label in _META_KEYS if key in meta]
    parts += ["", "## Comparison", "", f"The run is trained for the `{table['objective']}` objective and scored "
              f"headline-first in the `{table['headline']}` convention: IoU per terrain class in that convention; "
              "mean IoU in all three (`competition`: keras MeanIoU(num_classes=5, ignore_class=0), pixels whose truth "
              "is 0 dropped, mean over the class ids 0-4 with a non-zero union; `labeled`: the same pixels, mean "
              "over classes 1-4; `allpixels`: every pixel, mean over classes 1-4). `class 0 on labeled`: share of "
              "labeled pixels predicted as class 0.", ""]
    parts += [markdown_table(["model"] + [h for h, _ in COLUMNS], metric_rows(table)), ""]
    parts += ["## Differences to the baseline", "",
              f"`{table['baseline']}` subtracted; {level} % interval, {boot['method']} "
              f"({boot['n_boot']} replicates, seed {boot['seed']}); class IoUs in the {table['headline']} "
              "convention.", ""]
    parts += [markdown_table(difference_headers(), difference_rows(table)), ""]
    if table.get("tuned_differences"):
        parts += ["## Differences to the bias-tuned baseline", "",
                  f"`{table['tuned_baseline']}` subtracted: the baseline with one logit offset per class tuned for the "
                  f"{table['headline']} mIoU on the validation tiles, cross-fitted like the fusers, which are fitted "
                  "on the same tiles. Same bootstrap.", ""]
        parts += [markdown_table(difference_headers(), difference_rows(table, "tuned_differences")), ""]
    if table.get("best_strategy"):
        best = table["best_strategy"]
        parts += ["## Served by default", "",
                  f"`{best}`: the highest {table['headline']} mIoU "
                  f"({fmt(table['models'][best]['miou'][table['headline']])}) "
                  "among the models `ensemble predict` can serve (cross-fitted for fusers). `ensemble predict`, "
                  "`ensemble export` and `api.predictor()` use it when no strategy is named.", ""]
    if table.get("budgets"):
        parts += ["## Equal-compute comparison", "",
                  f"Each model's {table['headline']} mIoU and training minutes (every epoch's seconds times its "
                  "torch threads, summed over the model's networks, over the recorded cores); differences with "
                  f"their {level} % paired interval (same bootstrap).", ""]
        parts += [markdown_table(["budget", "model", "networks", "training minutes", f"mIoU {table['headline']}"],
                                 budget_rows(table))]
        parts += ["", markdown_table(["budget", "difference", f"mIoU {table['headline']}"],
                                     budget_difference_rows(table)), ""]
    if table.get("ablation"):
        parts += _section(
            "Which members the hybrid needs",
            "The hybrid refitted with one member's logit map replaced by zeros, and with its other mixing "
            f"weight (cross-fitted like the rest); {table['headline']} mIoU and paired differences "
            f"({level} % interval, same bootstrap).",
            ["hybrid", f"mIoU {table['headline']}", "minus hybrid",
             f"minus {table.get('tuned_baseline', 'baseline_bias')}"],
            ablation_rows(table))
    if table.get("tta_gain"):
        parts += _section(
            "Flip TTA",
            "Every served model scored again with the horizontal flip (the networks' logits of the tile and "
            f"of its mirror averaged; cross-fitted like the rest); {table['headline']} mIoU and the paired "
            f"gain ({level} % interval, same bootstrap). A model is served with the flip by default only "
            "where the interval is above 0: the flip runs every network twice.",
            ["model", "no TTA", "flip", "flip - none", "served with"], tta_gain_rows(table))
    if table.get("frames"):
        frames = table["frames"]
        parts += _section(
            "Whole frames",
            f"The {frames['n_frames']} validation images whose `:top` and `:bottom` tiles are both in the split, "
            f"rebuilt as {frames['shape'][0]}x{frames['shape'][1]} frames and predicted as one image by "
            f"Gaussian-weighted sliding windows (step {frames['step']:g} of a tile; the sources' logits "
            "stitched, then fused by the same cross-fitted fuser as the frame's tiles), beside the same frames "
            f"predicted tile by tile; {table['headline']} mIoU, difference stitched - tiles with its "
            f"{level} % paired interval over frames.",
            ["model", "tile by tile", "stitched", "difference"], frame_rows(table))
    if table.get("robustness"):
        parts += _robustness_sections(table["robustness"], level)
    parts += _section("Ensemble members", "Binary IoU of each one-vs-rest member on its own class.",
                      ["member", "binary IoU"], [[n, fmt(v)] for n, v in table["members"].items()])
    if table.get("budget_curve"):
        curve = table["budget_curve"]
        parts += ["## Budget curve", "",
                  f"Every model at the snapshot epochs of its training (`best.pt` as it stood then); fusers refitted "
                  f"at each point the same way as above; mIoU {curve['headline']}. Minutes: epoch seconds x torch "
                  f"threads, summed over a model's networks, divided by the {curve['cores']} cores "
                  "(`members` serves every fusion strategy).", ""]
        parts += [*curve_rows(curve), ""]
    figures = sorted(Path(out_dir).glob("*.png"))
    if figures:
        parts += ["## Figures", ""] + [f"- [{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(parts)


def _robustness_sections(robustness, level):
    """The robustness benchmark's sections: headline, the corruptions and their levels, every model's rows."""
    parts = _section(
        "Robustness",
        f"The {robustness['n_tiles']} validation tiles under each corruption at three severities (seeded, seed "
        f"{robustness['seed']}; `ensemble.core.corruptions`), predicted and fused exactly like the clean tiles "
        "(fusers cross-fitted; a resampled tile predicted with the matching `--scale`). mPC: the mean "
        f"{robustness['headline']} mIoU over every corruption and severity; rPC = mPC / clean; `trained`: the "
        "corruptions the training recipe draws, `held out`: those it never draws; worst: the lowest mIoU and "
        f"its drop from clean.",
        ROBUSTNESS_SUMMARY_HEADERS, robustness_summary_rows(robustness))
    parts += _section(
        "Corruptions", "Each corruption's parameter at severities 1, 2 and 3.",
        ["corruption", "family", "parameter", "severity 1", "severity 2", "severity 3", "in training"],
        [[c["name"], c["family"], c["parameter"], *(f"{v:g}" for v in c["levels"]), "yes" if c["trained"] else
          "held out"] for c in robustness["corruptions"]])
    if robustness.get("frames"):
        frames = robustness["frames"]
        parts += _section(
            "Robustness on whole frames",
            f"The {frames['n_tiles']} validation frames (each image's two tiles joined) under the same corruptions, "
            "predicted by sliding windows and fused by the same fold's fuser as their tiles; same columns.",
            ROBUSTNESS_SUMMARY_HEADERS, robustness_summary_rows(frames))
    for model in robustness["models"]:
        parts += _section(f"Robustness of {model}",
                          f"mIoU {robustness['headline']}, the paired drop from clean ({level} % interval over "
                          "tiles) and the class IoUs.", robustness_row_headers(), robustness_rows(robustness, model))
    return parts


def write_report(out_dir, table, meta):
    """Write ``report.json`` (``{"meta", "table"}``, NaN as null) and ``report.md`` into ``out_dir``.

    ``meta`` keys shown in the markdown header when present: run, data_sha, split, n_tiles,
    tta. The markdown links every ``*.png`` already in ``out_dir``, so write figures first.
    Returns the paths of both files.
    """
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    write_json_atomic(json_path, json_ready({"meta": meta, "table": table}))
    write_text_atomic(md_path, _markdown(out_dir, table, meta))
    return json_path, md_path
