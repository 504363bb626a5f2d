"""Plain text of every result: fixed-width tables for terminals, the rows the markdown report shares with them.

One home for the ``format_*`` functions the CLI prints: the comparison table of an evaluation, the
training summary, the data summary, the fusion results and a score.
"""
import math

import numpy as np

from ..core.classes import BASELINE, CLASS_NAMES, CONTROL, TERRAIN_CLASSES, TERRAIN_NAMES, TUNED_BASELINE
from ..core.metrics import COMPARE_COLUMNS, CONVENTIONS
from ..core.objectives import HEADLINE_CONVENTION

#: Table columns: (header, getter from a model row).
COLUMNS = (
    *((name.replace("_", " "), lambda row, name=name: row["iou"][name]) for name in TERRAIN_NAMES),
    *((f"mIoU {c}", lambda row, c=c: row["miou"][c]) for c in CONVENTIONS),
    ("class 0 on labeled", lambda row: row["background_on_labeled"]),
    ("pixel acc", lambda row: row["pixel_accuracy"]),
    ("ECE", lambda row: row["ece"]),
)


def fmt(value, signed=False):
    """Three decimals, or ``n/a`` for NaN/None."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def fmt_diff(cell):
    """``+0.031 [+0.012, +0.050]`` from a difference cell; ``n/a`` when the difference is undefined."""
    if cell["diff"] is None or not math.isfinite(cell["diff"]):
        return "n/a"
    return f"{fmt(cell['diff'], True)} [{fmt(cell['low'], True)}, {fmt(cell['high'], True)}]"


def markdown_table(headers, rows):
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


def metric_rows(table):
    return [[name] + [fmt(get(table["models"][name])) for _, get in COLUMNS] for name in table["order"]]


def difference_headers():
    names = [c.replace("_", " ") if c in TERRAIN_NAMES else c.replace("miou_", "mIoU ") for c in COMPARE_COLUMNS]
    return ["model"] + names


def difference_rows(table, key="differences"):
    return [[name] + [fmt_diff(table[key][name][c]) for c in COMPARE_COLUMNS]
            for name in table["order"] if name in table[key]]


def format_table(table):
    """Plain fixed-width text of the comparison table (one row per model), for terminals.

    Below it, each non-baseline model's headline mean IoU difference to the baseline with its
    95 % bootstrap interval, then to the bias-tuned baseline when there is one.
    """
    headline = table["headline"]
    text = f"objective {table['objective']}; class IoUs in the {headline} convention\n"
    text += text_table(["model"] + [header for header, _ in COLUMNS], metric_rows(table))
    diffs = [f"{name}: mIoU {headline} {fmt_diff(table[key][name]['miou_' + headline])} vs {against}"
             for key, against in (("differences", table["baseline"]),
                                  ("tuned_differences", table.get("tuned_baseline")))
             for name in table["order"] if name in table.get(key, {})]
    text += "\n\n" + "\n".join(diffs) if diffs else ""
    if table.get("budgets"):
        text += "\n\nat equal compute (training minutes in brackets):\n" + "\n".join(
            f"  {b['budget']}: " + ", ".join(f"{r['model']} {fmt(r['miou'])} ({r['minutes']:.0f} min)"
                                             for r in b["rows"])
            + "".join(f"\n    {d['model']} - {d['minus']}: {fmt_diff(d)}" for d in b["differences"])
            for b in table["budgets"])
    if table.get("best_strategy"):
        text += f"\n\nserved by default: {table['best_strategy']} (highest mIoU {headline})"
    if table.get("frames"):
        frames = table["frames"]
        text += (f"\n\nwhole frames ({frames['n_frames']} validation images, "
                 f"{frames['shape'][0]}x{frames['shape'][1]}, step {frames['step']:g}): mIoU {headline} tile by tile "
                 "-> stitched, difference [95 % interval]\n")
        text += "\n".join(f"  {r['model']}: {fmt(r['tiles'])} -> {fmt(r['stitched'])}, {fmt_diff(r)}"
                          for r in frames["rows"])
    if table.get("robustness"):
        text += "\n\n" + format_robustness(table["robustness"]).rstrip("\n")
    return text + "\n"


def _worst(summary):
    worst = summary["worst"]
    return f"{worst['corruption']} {worst['severity']} ({fmt(worst['miou'])}, {fmt(worst['drop'], True)})"


def robustness_summary_rows(robustness):
    """Rows (model, clean, mPC, rPC, trained mPC, held-out mPC, middle-severity mPC, worst middle, worst) of the
    robustness benchmark's headline."""
    rows = []
    for model, entry in robustness["models"].items():
        parts = [entry["all"], entry["trained"], entry["held_out"], entry["middle"]]
        rows.append([model, fmt(entry["clean"]), *(fmt(p["mpc"]) if p else "n/a" for p in parts[:1]),
                     fmt(entry["all"]["rpc"]), *(fmt(p["mpc"]) if p else "n/a" for p in parts[1:]),
                     _worst(entry["middle"]) if entry["middle"] else "n/a", _worst(entry["all"])])
    return rows


ROBUSTNESS_SUMMARY_HEADERS = ["model", "clean", "mPC", "rPC", "mPC trained", "mPC held out", "mPC severity 2",
                              "worst at severity 2 (mIoU, drop)", "worst (mIoU, drop)"]


def robustness_rows(robustness, model):
    """Rows (corruption, severity, parameter, mIoU, drop [interval], class IoUs) of one model's benchmark."""
    entry = robustness["models"][model]
    return [[r["corruption"] + ("" if r["trained"] else " (held out)"), str(r["severity"]), f"{r['parameter']:g}",
             fmt(r["miou"]), fmt_diff(r["drop"]), *(fmt(r["iou"][name]) for name in TERRAIN_NAMES)]
            for r in entry["rows"]]


def robustness_row_headers():
    return ["corruption", "severity", "parameter", "mIoU", "drop from clean",
            *(n.replace("_", " ") for n in TERRAIN_NAMES)]


def format_robustness(robustness):
    """Plain text of the robustness benchmark's headline, and the served default's middle-severity drops."""
    text = (f"robustness ({robustness['n_tiles']} validation tiles, {len(robustness['corruptions'])} corruptions x "
            f"{len(robustness.get('severities', (1, 2, 3)))} "
            f"severities, mIoU {robustness['headline']}):\n")
    text += text_table(ROBUSTNESS_SUMMARY_HEADERS, robustness_summary_rows(robustness))
    shown = list(robustness["models"])[-1]
    middle = [r for r in robustness["models"][shown]["rows"] if r["severity"] == robustness["middle_severity"]]
    if robustness.get("frames"):
        text += f"\nwhole frames ({robustness['frames']['n_tiles']}):\n"
        text += text_table(ROBUSTNESS_SUMMARY_HEADERS, robustness_summary_rows(robustness["frames"]))
    text += f"\n{shown} at severity {robustness['middle_severity']}, drop from clean [95 % interval]:\n"
    text += "\n".join(f"  {r['corruption']}{'' if r['trained'] else ' (held out)'} {r['parameter']:g}: "
                       f"{fmt(r['miou'])}, {fmt_diff(r['drop'])}" for r in middle)
    return text + "\n"


def frame_rows(table):
    """Markdown rows of the whole-frame comparison: model, tile-by-tile and stitched mIoU, difference."""
    return [[r["model"], fmt(r["tiles"]), fmt(r["stitched"]), fmt_diff(r)] for r in table["frames"]["rows"]]


def budget_rows(table):
    """Rows (budget, model, networks, minutes, mIoU) of the equal-compute comparison."""
    return [[b["budget"], r["model"], str(r["networks"]), f"{r['minutes']:.1f}", fmt(r["miou"])]
            for b in table.get("budgets", []) for r in b["rows"]]


def budget_difference_rows(table):
    """Rows (budget, "a - b", difference [interval]) of the equal-compute comparison."""
    return [[b["budget"], f"{d['model']} - {d['minus']}", fmt_diff(d)]
            for b in table.get("budgets", []) for d in b["differences"]]


def ablation_rows(table):
    """Rows (member left out, mIoU, minus the hybrid, minus the tuned baseline) of the member ablation."""
    return [[r["variant"], fmt(r["miou"]), fmt_diff(r["vs_full"]), fmt_diff(r["vs_tuned_baseline"])]
            for r in table.get("ablation", [])]


def tta_gain_rows(table):
    """Rows (model, mIoU without TTA, with flip, flip - none [interval], served with) of the flip measurement."""
    gain = table.get("tta_gain") or {"rows": []}
    return [[r["model"], fmt(r["miou_none"]), fmt(r["miou_flip"]), fmt_diff(r), r["default"]]
            for r in gain["rows"]]


def single_models(points):
    """The curve's models trained alone: the baseline, the bias-tuned baseline and the control when scored."""
    return [BASELINE, *(name for name in (TUNED_BASELINE, CONTROL) if any(name in p["miou"] for p in points))]


def curve_rows(curve):
    """Markdown table lines of the curve: one row per point, mIoU of every model, minutes of each group."""
    models = [*single_models(curve["points"]), *curve["strategies"]]
    groups = list(curve["points"][0]["minutes"])
    headers = ["epoch", "tiles seen per network", *[f"min {g}" for g in groups], *[f"mIoU {m}" for m in models],
               "big rock: baseline / learned"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---:"] * len(headers)) + "|"]
    for p in curve["points"]:
        br = p["big_rock"]
        learned = br.get("learned", float("nan"))
        cells = [str(p["epoch"]), f"{p['tiles_seen']:,}",
                 *[f"{p['minutes'][g]:.1f}" for g in groups],
                 *[f"{p['miou'][m]:.3f}" if m in p["miou"] else "" for m in models],
                 f"{br[BASELINE]:.3f} / {learned:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fmt4(value, spec=".4f"):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_training_summary(results):
    """One row per network: epochs, best epoch, best validation IoU, parameters, seconds, status."""
    header = f"{'network':<11}{'epochs':>7}{'best':>6}{'val IoU':>9}{'params':>10}{'seconds':>9}  status"
    lines = [header, "-" * len(header)]
    for r in results:
        if r.get("failed"):
            lines.append(f"{r['name']:<11}{'':>7}{'':>6}{'':>9}{'':>10}{'':>9}  failed")
            continue
        status = "already done" if r.get("skipped") else ("stopped early" if r.get("stopped_early") else "done")
        lines.append(
            f"{r['name']:<11}{r['epochs_run']:>7}{r['best_epoch']:>6}{_fmt4(r['best_val_iou']):>9}"
            f"{r['parameters']:>10,}{r['seconds']:>9.0f}  {status}"
        )
    return "\n".join(lines)


def format_summary(summary):
    """Human-readable lines for :func:`summarize`'s dict."""
    lines = [
        f"file            {summary['file']}",
        f"training tiles  {summary['training_tiles']} of {summary['tile_height']}x{summary['tile_width']}",
        f"test tiles      {summary['test_tiles']}",
        f"groups          {summary['groups'] if summary['groups'] is not None else 'none (tile split, leaks)'}",
        "",
        f"{'id':>2}  {'class':<11}{'pixel share':>12}{'tiles with it':>15}",
    ]
    for c in summary["classes"]:
        lines.append(f"{c['id']:>2}  {c['name']:<11}{100 * c['pixel_share']:>11.2f}%{100 * c['tile_presence']:>14.1f}%")
    lines.append("")
    lines.append(f"outliers        {summary['outlier_tiles']} tiles")
    for reason, idx in summary["outliers"].items():
        head = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
        lines.append(f"  {reason:<14}{len(idx):>6}  (tiles {head})")
    for rep in summary["repeated_masks"]:
        lines.append(f"  one mask repeated on {rep['tiles']} tiles (first tile {rep['first_tile']})")
    return "\n".join(lines)


def format_fusion_results(results):
    """Lines for the CLI: fitted parameters, NLL/ECE before and after, per-class IoU."""
    lines = []
    for name, r in results.items():
        b, a = r["before"], r["after"]
        lines.append(f"== {name}  (fitted on {r['tiles']} validation tiles in {r['seconds']:.1f}s -> {r['path']})")
        lines.extend(f"   {line}" for line in r["params"])
        lines.append(f"   NLL {b['nll']:.4f} -> {a['nll']:.4f}   ECE {b['ece']:.4f} -> {a['ece']:.4f}"
                     f"   (before: softmax of the {r.get('before_source', 'members')} logits)")
    if not results:
        return "\n".join(lines)
    objective = next(iter(results.values()))["objective"]
    header = (f"{'strategy':<19}" + "".join(f"{CLASS_NAMES[c]:>9}" for c in TERRAIN_CLASSES)
              + "".join(f"{'mIoU ' + c:>22}" for c in CONVENTIONS))
    lines += ["", f"in-sample validation IoU of the fused masks (objective {objective}; per class: "
                  f"{HEADLINE_CONVENTION[objective]} convention):", header]
    for name, r in results.items():
        a = r["after"]
        lines.append(f"{name:<19}" + "".join(f"{a['iou'][CLASS_NAMES[c]]:>9.4f}" for c in TERRAIN_CLASSES)
                     + "".join(f"{a['miou'][c]:>22.4f}" for c in CONVENTIONS))
    return "\n".join(lines)


def format_scores(scores):
    """A fixed-width table: one row per convention, columns per terrain class and the mean."""
    headers = ["convention", *(n.replace("_", " ") for n in TERRAIN_NAMES), "mean"]
    rows = [[c] + ["n/a" if not np.isfinite(scores[c][k]) else f"{scores[c][k]:.4f}"
                   for k in (*TERRAIN_NAMES, "mean")] for c in CONVENTIONS]
    lines = text_table(headers, rows).splitlines()
    share = scores["class0_on_labeled"]
    count, unit = scores["tiles"], scores.get("unit", "tiles")
    lines.append(f"{count} {unit[:-1] if count == 1 else unit}; class 0 predicted on "
                 f"{'n/a' if not np.isfinite(share) else f'{100 * share:.2f} %'} of the labeled pixels")
    lines.append("competition = keras MeanIoU(num_classes=5, ignore_class=0): the headline of the AN2DL task")
    return "\n".join(lines)
