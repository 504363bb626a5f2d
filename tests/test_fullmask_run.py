"""models/fullmask (the reference recipe trained for full 5-class masks): its evaluation reproduces.

A file of its own, beside tests/test_reference_run.py, so that pytest-xdist (``--dist loadfile``)
can rerun both shipped evaluations at once on two workers. The suite reruns the rows that fit nothing or only
offsets (``argmax``, ``baseline``, ``baseline_bias``, the members: the full-mask objective's scoring and offsets
on real networks); ``pytest --full-rerun`` also reruns the trained fusers' rows, whose code the reference run's
rerun checks to the digit under its objective and the small runs' tests under this one.
"""
from test_reference_run import FULLMASK, assert_evaluation_reproduces

#: What the suite's rerun leaves out (``pytest --full-rerun`` keeps it): the trained fusers' rows.
FULLMASK_LEFT_OUT = {"without": ("calibrated", "learned", "learned3x3")}


def test_shipped_evaluation_reproduces(tmp_path, data_path, full_rerun):
    assert_evaluation_reproduces(FULLMASK, tmp_path, data_path, **({} if full_rerun else FULLMASK_LEFT_OUT))
