"""The two tiers (tests/conftest.py): ``--fast`` leaves out every slow test, and the longest files come first."""
import subprocess
import sys
from pathlib import Path

from conftest import LONGEST_FILES, SLOW_FILES

ROOT = Path(__file__).resolve().parents[1]


def _collected(*args):
    """The node ids pytest collects with ``args`` (no test is run)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-o", "addopts=", "-q", *args],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "::" in line]


def test_the_fast_tier_leaves_out_the_slow_files_and_the_trained_run_fixtures():
    everything = _collected()
    fast = _collected("-m", "not slow")
    assert 0 < len(fast) < len(everything)
    assert not [n for n in fast if Path(n.split("::")[0]).name in SLOW_FILES]
    marked = "test_ensemble_run_distill_adds_the_student_and_reads_the_data_once"  # marked slow
    assert [n for n in everything if marked in n] and not [n for n in fast if marked in n]
    assert [n for n in everything if "test_onnxruntime_equals_torch" in n]  # uses reference_copy: full tier only
    assert not [n for n in fast if "test_onnxruntime_equals_torch" in n]
    files = list(dict.fromkeys(Path(n.split("::")[0]).name for n in everything))
    assert files[:len(LONGEST_FILES)] == list(LONGEST_FILES)
