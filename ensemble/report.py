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
    }

NaN (a class absent from truth and prediction, or a missing ECE) prints as ``n/a`` and is
stored as ``null`` in report.json.
"""
import math
from pathlib import Path

import numpy as np

from .bootstrap import COMPARE_COLUMNS, compare_to_baseline
from .core.classes import CLASS_NAMES, TERRAIN_CLASSES
from .core.fileio import write_json_atomic, write_text_atomic
from .core.metrics import CONVENTIONS, all_mean_ious, iou_per_class, pixel_accuracy
from .core.objectives import HEADLINE_CONVENTION

TERRAIN_NAMES = tuple(CLASS_NAMES[c] for c in TERRAIN_CLASSES)
#: Table columns: (header, getter from a model row).
_COLUMNS = (
    *((name.replace("_", " "), lambda row, name=name: row["iou"][name]) for name in TERRAIN_NAMES),
    *((f"mIoU {c}", lambda row, c=c: row["miou"][c]) for c in CONVENTIONS),
    ("class 0 on labeled", lambda row: row["background_on_labeled"]),
    ("pixel acc", lambda row: row["pixel_accuracy"]),
    ("ECE", lambda row: row["ece"]),
)
_META_KEYS = (("run", "run"), ("objective", "objective"), ("data_sha", "data sha256"), ("split", "split"),
              ("n_tiles", "tiles"), ("tta", "TTA"), ("fusers_fitted_on", "fusers fitted on"),
              ("engine", "inference engine"), ("training_threads", "torch threads per network in training"))
BOOTSTRAP_METHOD = "paired percentile bootstrap over tiles"


def background_on_labeled(cm):
    """Share of the labeled pixels (truth 1-4) predicted as class 0."""
    cm = np.asarray(cm, dtype=np.float64)
    labeled = cm[1:].sum()
    return float(cm[1:, 0].sum() / labeled) if labeled else float("nan")


def _model_row(tile_cms, ece, headline):
    """Summary metrics of one model from its (N, C, C) per-tile confusion matrices."""
    cm = np.asarray(tile_cms).sum(axis=0)
    iou = iou_per_class(cm, headline)
    return {
        "iou": {CLASS_NAMES[c]: float(iou[c]) for c in TERRAIN_CLASSES},
        "miou": all_mean_ious(cm),
        "pixel_accuracy": pixel_accuracy(cm, headline),
        "background_on_labeled": background_on_labeled(cm),
        "ece": float(ece),
        "n_tiles": int(len(tile_cms)),
    }


def build_table(tile_cms, probs_ece, member_ious, baseline_name="baseline", n_boot=1000, seed=0,
                objective="competition", tuned_name=None):
    """Build the comparison ``table`` (structure in the module docstring).

    ``tile_cms`` maps model name to (N, C, C) per-tile confusion matrices on the same tiles;
    ``probs_ece`` maps model name to its expected calibration error (models without
    probabilities may be left out: NaN); ``member_ious`` maps class name to the binary IoU of
    that class's one-vs-rest member. Per-class IoUs and the bootstrap are in the headline
    convention of ``objective``. Differences to ``baseline_name`` use a paired bootstrap
    with ``n_boot`` replicates and a 95 % percentile interval. When ``tuned_name`` is among the
    models, every model but the baseline is also compared with it (``tuned_differences``).
    """
    if baseline_name not in tile_cms:
        raise KeyError(f"baseline {baseline_name!r} not among models: {', '.join(tile_cms)}")
    headline = HEADLINE_CONVENTION[objective]
    order = [baseline_name] + [name for name in tile_cms if name != baseline_name]
    alpha = 0.05
    table = {
        "baseline": baseline_name,
        "objective": objective,
        "headline": headline,
        "order": order,
        "models": {name: _model_row(tile_cms[name], probs_ece.get(name, math.nan), headline) for name in order},
        "differences": compare_to_baseline(tile_cms, baseline_name, n_boot=n_boot, seed=seed, alpha=alpha,
                                           convention=headline),
        "members": {str(name): float(value) for name, value in member_ious.items()},
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "alpha": alpha, "method": BOOTSTRAP_METHOD},
    }
    if tuned_name in tile_cms:
        table["tuned_baseline"] = tuned_name
        table["tuned_differences"] = compare_to_baseline(
            {name: cms for name, cms in tile_cms.items() if name != baseline_name}, tuned_name, n_boot=n_boot,
            seed=seed, alpha=alpha, convention=headline)
    return table


def _fmt(value, signed=False):
    """Three decimals, or ``n/a`` for NaN/None."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _fmt_diff(cell):
    """``+0.031 [+0.012, +0.050]`` from a difference cell; ``n/a`` when the difference is undefined."""
    if cell["diff"] is None or not math.isfinite(cell["diff"]):
        return "n/a"
    return f"{_fmt(cell['diff'], True)} [{_fmt(cell['low'], True)}, {_fmt(cell['high'], True)}]"


def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers, rows):
    """Fixed-width text table: first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _metric_rows(table):
    return [[name] + [_fmt(get(table["models"][name])) for _, get in _COLUMNS] for name in table["order"]]


def _difference_headers():
    names = [c.replace("_", " ") if c in TERRAIN_NAMES else c.replace("miou_", "mIoU ") for c in COMPARE_COLUMNS]
    return ["model"] + names


def _difference_rows(table, key="differences"):
    return [[name] + [_fmt_diff(table[key][name][c]) for c in COMPARE_COLUMNS]
            for name in table["order"] if name in table[key]]


def format_table(table):
    """Plain fixed-width text of the comparison table (one row per model), for terminals.

    Below it, each non-baseline model's headline mean IoU difference to the baseline with its
    95 % bootstrap interval, then to the bias-tuned baseline when there is one.
    """
    headline = table["headline"]
    text = f"objective {table['objective']}; class IoUs in the {headline} convention\n"
    text += text_table(["model"] + [header for header, _ in _COLUMNS], _metric_rows(table))
    diffs = [f"{name}: mIoU {headline} {_fmt_diff(table[key][name]['miou_' + headline])} vs {against}"
             for key, against in (("differences", table["baseline"]), ("tuned_differences", table.get("tuned_baseline")))
             for name in table["order"] if name in table.get(key, {})]
    text += "\n\n" + "\n".join(diffs) if diffs else ""
    if table.get("budgets"):
        text += "\n\nat equal compute (training minutes in brackets):\n" + "\n".join(
            f"  {b['budget']}: " + ", ".join(f"{r['model']} {_fmt(r['miou'])} ({r['minutes']:.0f} min)" for r in b["rows"])
            + "".join(f"\n    {d['model']} - {d['minus']}: {_fmt_diff(d)}" for d in b["differences"])
            for b in table["budgets"])
    if table.get("best_strategy"):
        text += f"\n\nserved by default: {table['best_strategy']} (highest mIoU {headline})"
    if table.get("frames"):
        frames = table["frames"]
        text += (f"\n\nwhole frames ({frames['n_frames']} validation images, {frames['shape'][0]}x{frames['shape'][1]}, "
                 f"step {frames['step']:g}): mIoU {headline} tile by tile -> stitched, difference [95 % interval]\n")
        text += "\n".join(f"  {r['model']}: {_fmt(r['tiles'])} -> {_fmt(r['stitched'])}, {_fmt_diff(r)}"
                          for r in frames["rows"])
    return text + "\n"


def frame_rows(table):
    """Markdown rows of the whole-frame comparison: model, tile-by-tile and stitched mIoU, difference."""
    return [[r["model"], _fmt(r["tiles"]), _fmt(r["stitched"]), _fmt_diff(r)] for r in table["frames"]["rows"]]


def budget_rows(table):
    """Rows (budget, model, networks, minutes, mIoU) of the equal-compute comparison."""
    return [[b["budget"], r["model"], str(r["networks"]), f"{r['minutes']:.1f}", _fmt(r["miou"])]
            for b in table.get("budgets", []) for r in b["rows"]]


def budget_difference_rows(table):
    """Rows (budget, "a - b", difference [interval]) of the equal-compute comparison."""
    return [[b["budget"], f"{d['model']} - {d['minus']}", _fmt_diff(d)]
            for b in table.get("budgets", []) for d in b["differences"]]


def ablation_rows(table):
    """Rows (member left out, mIoU, minus the hybrid, minus the tuned baseline) of the member ablation."""
    return [[r["variant"], _fmt(r["miou"]), _fmt_diff(r["vs_full"]), _fmt_diff(r["vs_tuned_baseline"])]
            for r in table.get("ablation", [])]


def tta_gain_rows(table):
    """Rows (model, mIoU without TTA, with flip, flip - none [interval], served with) of the flip measurement."""
    gain = table.get("tta_gain") or {"rows": []}
    return [[r["model"], _fmt(r["miou_none"]), _fmt(r["miou_flip"]), _fmt_diff(r), r["default"]]
            for r in gain["rows"]]


def smoke_run_line(shipped_table, shipped_report):
    """The line a quick run's table ends with: what the shipped full run measured for its served default, the
    tuned baseline and the baseline (read from its report), so a smoke run is not taken for the result."""
    headline = shipped_table["headline"]
    names = [n for n in dict.fromkeys([shipped_table.get("best_strategy"), "baseline_bias", shipped_table["baseline"]])
             if n in shipped_table["models"]]
    scores = ", ".join(f"{n} {_fmt(shipped_table['models'][n]['miou'][headline])}" for n in names)
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
    parts += [_markdown_table(["model"] + [h for h, _ in _COLUMNS], _metric_rows(table)), ""]
    parts += ["## Differences to the baseline", "",
              f"`{table['baseline']}` subtracted; {level} % interval, {boot['method']} "
              f"({boot['n_boot']} replicates, seed {boot['seed']}); class IoUs in the {table['headline']} "
              "convention.", ""]
    parts += [_markdown_table(_difference_headers(), _difference_rows(table)), ""]
    if table.get("tuned_differences"):
        parts += ["## Differences to the bias-tuned baseline", "",
                  f"`{table['tuned_baseline']}` subtracted: the baseline with one logit offset per class tuned for the "
                  f"{table['headline']} mIoU on the validation tiles, cross-fitted like the fusers, which are fitted "
                  "on the same tiles. Same bootstrap.", ""]
        parts += [_markdown_table(_difference_headers(), _difference_rows(table, "tuned_differences")), ""]
    if table.get("best_strategy"):
        best = table["best_strategy"]
        parts += ["## Served by default", "",
                  f"`{best}`: the highest {table['headline']} mIoU ({_fmt(table['models'][best]['miou'][table['headline']])}) "
                  "among the models `ensemble predict` can serve (cross-fitted for fusers). `ensemble predict`, "
                  "`ensemble export` and `api.predictor()` use it when no strategy is named.", ""]
    if table.get("budgets"):
        parts += ["## Equal-compute comparison", "",
                  f"Each model's {table['headline']} mIoU and training minutes (every epoch's seconds times its "
                  "torch threads, summed over the model's networks, over the recorded cores); differences with "
                  f"their {level} % paired interval (same bootstrap).", ""]
        parts += [_markdown_table(["budget", "model", "networks", "training minutes", f"mIoU {table['headline']}"],
                                  budget_rows(table))]
        parts += ["", _markdown_table(["budget", "difference", f"mIoU {table['headline']}"],
                                      budget_difference_rows(table)), ""]
    if table.get("ablation"):
        parts += ["## Which members the hybrid needs", "",
                  "The hybrid refitted with one member's logit map replaced by zeros, and with its other mixing "
                  f"weight (cross-fitted like the rest); {table['headline']} mIoU and paired differences "
                  f"({level} % interval, same bootstrap).", ""]
        parts += [_markdown_table(["hybrid", f"mIoU {table['headline']}", "minus hybrid",
                                   f"minus {table.get('tuned_baseline', 'baseline_bias')}"], ablation_rows(table)), ""]
    if table.get("tta_gain"):
        parts += ["## Flip TTA", "",
                  "Every served model scored again with the horizontal flip (the networks' logits of the tile and "
                  f"of its mirror averaged; cross-fitted like the rest); {table['headline']} mIoU and the paired "
                  f"gain ({level} % interval, same bootstrap). A model is served with the flip by default only "
                  "where the interval is above 0: the flip runs every network twice.", ""]
        parts += [_markdown_table(["model", "no TTA", "flip", "flip - none", "served with"],
                                  tta_gain_rows(table)), ""]
    if table.get("frames"):
        frames = table["frames"]
        parts += ["## Whole frames", "",
                  f"The {frames['n_frames']} validation images whose `:top` and `:bottom` tiles are both in the split, "
                  f"rebuilt as {frames['shape'][0]}x{frames['shape'][1]} frames and predicted as one image by "
                  f"Gaussian-weighted sliding windows (step {frames['step']:g} of a tile; the sources' logits "
                  "stitched, then fused by the same cross-fitted fuser as the frame's tiles), beside the same frames "
                  f"predicted tile by tile; {table['headline']} mIoU, difference stitched - tiles with its "
                  f"{level} % paired interval over frames.", ""]
        parts += [_markdown_table(["model", "tile by tile", "stitched", "difference"], frame_rows(table)), ""]
    parts += ["## Ensemble members", "", "Binary IoU of each one-vs-rest member on its own class.", ""]
    parts += [_markdown_table(["member", "binary IoU"], [[n, _fmt(v)] for n, v in table["members"].items()]), ""]
    if table.get("budget_curve"):
        from .curve import curve_rows  # the curve's module loads torch: only when there is a curve

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
