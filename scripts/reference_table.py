"""The README's table of the shipped reference run, generated from its committed evaluation report.

Prints the markdown table (competition mIoU of the served strategies, the baseline and the tuned
baseline, with each model's networks and training minutes, and, when the report holds the robustness
benchmark, the mean mIoU over its corruptions (mPC) of the models it scored) from
``models/reference/evaluation/report.json``; ``--write`` replaces the block between the
``<!-- reference-table:start -->`` and ``<!-- reference-table:end -->`` lines of README.md with it.
tests/test_docs.py checks that the README holds exactly this table.

Usage: python scripts/reference_table.py [--report PATH] [--write]
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "models" / "reference" / "evaluation" / "report.json"
README = ROOT / "README.md"
START, END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"

#: (row, what it is), in the table's order; rows the report lacks are left out.
ROWS = (
    ("stacked", "members + baseline: a 1x1 convolution over their 10 logit maps, then tuned class offsets"),
    ("hybrid", "members' learned fusion and the baseline soft-voted, then tuned class offsets"),
    ("vote", "members' and baseline's softmax averaged: nothing fitted on the validation tiles"),
    ("learned", "members + learned 1x1 fusion"),
    ("control", "five multiclass nets of the members' width, softmax-averaged"),
    ("student_bias", "the student + tuned class offsets"),
    ("student", "one network of the baseline's size distilled from a fused teacher of the run (minutes: the "
                "teacher's networks and the student)"),
    ("baseline_pair_bias", "the baseline and a second seed soft-voted, then tuned class offsets"),
    ("baseline_bias", "the baseline + per-class logit offsets tuned on the validation folds"),
    ("baseline", "one multiclass U-Net with the members' parameter count"),
)


def minutes_by_model(table):
    """Training minutes of each model in the report's equal-compute comparison."""
    return {row["model"]: row["minutes"] for budget in table.get("budgets", []) for row in budget["rows"]}


def reference_table(report_path=REPORT):
    """The markdown table (lines) of the report at ``report_path``."""
    table = json.loads(Path(report_path).read_text())["table"]
    headline = table["headline"]
    minutes = minutes_by_model(table)
    best = table.get("best_strategy")
    robust = (table.get("robustness") or {}).get("models", {})
    lines = [f"| model | what it is | training minutes | mIoU ({headline}) |"
             + (" mPC (corrupted) |" if robust else ""),
             "|---|---|---:|---:|" + ("---:|" if robust else "")]
    for name, what in ROWS:
        if name not in table["models"]:
            continue
        label = f"`{name}`" + (" (served by default)" if name == best else "")
        spent = f"{minutes[name]:.0f}" if name in minutes else ""
        mpc = f" {robust[name]['all']['mpc']:.3f} |" if name in robust else " |" if robust else ""
        lines.append(f"| {label} | {what} | {spent} | {table['models'][name]['miou'][headline]:.3f} |" + mpc)
    return lines


def readme_block(text):
    """The lines between the markers of ``text`` (ValueError if they are missing)."""
    lines = text.splitlines()
    if START not in lines or END not in lines:
        raise ValueError(f"README.md lacks the {START} / {END} lines")
    return lines[lines.index(START) + 1 : lines.index(END)]


def write_readme(lines, readme=README):
    """Replace the block between the markers of ``readme`` with ``lines``."""
    text = readme.read_text()
    old = readme_block(text)
    all_lines = text.splitlines()
    start = all_lines.index(START) + 1
    new = all_lines[:start] + lines + all_lines[start + len(old):]
    readme.write_text("\n".join(new) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default=str(REPORT))
    parser.add_argument("--write", action="store_true", help="Replace the table in README.md.")
    args = parser.parse_args(argv)
    lines = reference_table(args.report)
    if args.write:
        write_readme(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
