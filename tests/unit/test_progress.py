"""The one time-left formatter and its estimate (pages and the command line share them)."""

from __future__ import annotations

from facetrack.progress import MIN_SECONDS, MIN_STEPS, RateEstimate, format_time_left


def test_format_time_left():
    assert format_time_left(None) == "estimating time left"
    assert format_time_left(42.4) == "about 42 s left"
    assert format_time_left(185) == "about 3 min 05 s left"
    assert format_time_left(3720) == "about 1 h 02 min left"
    assert format_time_left(-5) == "about 0 s left"


def test_no_estimate_until_enough_time_and_steps():
    est = RateEstimate()
    assert est.update(0, 1000, now=100.0) is None  # the start
    assert est.update(1, 1000, now=100.01) is None  # one quick step says nothing (no "1708m37s left")
    assert est.update(MIN_STEPS, 1000, now=100.0 + MIN_SECONDS / 2) is None  # too soon
    left = est.update(10, 1000, now=100.0 + MIN_SECONDS * 2)
    assert left == (1000 - 10) * (MIN_SECONDS * 2) / 10
