"""models/fullmask (the reference recipe trained for full 5-class masks): its evaluation reproduces.

A file of its own, beside tests/test_reference_run.py, so that pytest-xdist (``--dist loadfile``)
can rerun both shipped evaluations at once on two workers. The ``calibrated`` and ``learned3x3`` rows are left
out: their fits are the rerun's longest, and the reference run's rerun checks both fusers' code to the digit
(under its objective, competition).
"""
from test_reference_run import FULLMASK, assert_evaluation_reproduces


def test_shipped_evaluation_reproduces(tmp_path, data_path):
    assert_evaluation_reproduces(FULLMASK, tmp_path, data_path, without=("calibrated", "learned3x3"))
