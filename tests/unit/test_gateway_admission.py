"""Owns the tests of sagellmd/gateway/admission.py: the drain rate and the SLO admission rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagellmd.gateway.admission import DrainRate, slo_rejection


def test_no_rate_before_any_dispatch():
    assert DrainRate().per_second(100.0) is None


def test_no_rate_from_a_moment():
    rate = DrainRate(window_s=5.0)
    rate.record(10.0, 3)
    rate.record(10.001)
    assert rate.per_second(10.001) is None  # under a tenth of the window measured


def test_steady_rate_is_measured():
    rate = DrainRate(window_s=5.0)
    for i in range(1000):  # 50 per second for 20 s
        rate.record(i * 0.02)
    assert rate.per_second(19.99) == pytest.approx(50.0, rel=0.05)


def test_rate_follows_a_change_within_a_window():
    rate = DrainRate(window_s=2.0)
    now = 0.0
    for _ in range(400):  # 100/s
        now += 0.01
        rate.record(now)
    assert rate.per_second(now) == pytest.approx(100.0, rel=0.05)
    for _ in range(100):  # then 20/s
        now += 0.05
        rate.record(now)
    assert rate.per_second(now) == pytest.approx(20.0, rel=0.1)


def test_counts_are_added():
    rate = DrainRate(window_s=1.0)
    rate.record(0.0, 10)
    rate.record(0.5, 10)
    assert rate.per_second(0.5) == pytest.approx(40.0)


def test_idle_window_is_no_measurement_and_restarts():
    rate = DrainRate(window_s=1.0)
    for i in range(100):
        rate.record(i * 0.01)
    assert rate.per_second(2.5) is None  # nothing dispatched for a whole window
    rate.record(3.0)
    assert rate.per_second(3.0) is None
    rate.record(3.2)
    assert rate.per_second(3.2) == pytest.approx(10.0)


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="window_s"):
        DrainRate(window_s=0)


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=200),
    counts=st.integers(min_value=1, max_value=5),
)
def test_rate_is_never_negative_and_bounded_by_what_was_recorded(gaps, counts):
    rate = DrainRate(window_s=1.0)
    now = 0.0
    for gap in gaps:
        now += gap
        rate.record(now, counts)
        value = rate.per_second(now)
        assert value is None or 0 < value <= counts * len(gaps) / 0.1 + 1e-9


def test_passed_deadline_is_rejected():
    reason = slo_rejection(deadline=9.8, now=10.0, ahead=0, drain_per_s=None, free_slots=5)
    assert reason == "the TTFT deadline passed 200 ms ago"


def test_free_slot_admits():
    assert slo_rejection(deadline=10.1, now=10.0, ahead=500, drain_per_s=1.0, free_slots=1) is None


def test_no_measurement_admits():
    assert slo_rejection(deadline=10.1, now=10.0, ahead=500, drain_per_s=None, free_slots=0) is None


def test_unreachable_deadline_is_rejected_with_the_figures():
    reason = slo_rejection(deadline=10.2, now=10.0, ahead=40, drain_per_s=50.0, free_slots=0)
    assert reason == (
        "the TTFT deadline (200 ms left) cannot be met: 40 requests are ahead and the queue"
        " drains 50/s (about 800 ms)"
    )


def test_reachable_deadline_is_admitted():
    assert slo_rejection(deadline=11.0, now=10.0, ahead=40, drain_per_s=50.0, free_slots=0) is None


def test_first_in_line_is_admitted():
    assert slo_rejection(deadline=10.01, now=10.0, ahead=0, drain_per_s=1.0, free_slots=0) is None


def test_queue_that_does_not_drain_rejects():
    reason = slo_rejection(deadline=11.0, now=10.0, ahead=1, drain_per_s=0.0, free_slots=0)
    assert reason is not None and "not draining" in reason


@given(
    left=st.floats(min_value=0.001, max_value=60),
    ahead=st.integers(min_value=1, max_value=10_000),
    drain=st.floats(min_value=0.01, max_value=10_000),
)
def test_rejects_exactly_when_the_wait_exceeds_the_time_left(left, ahead, drain):
    reason = slo_rejection(
        deadline=100.0 + left, now=100.0, ahead=ahead, drain_per_s=drain, free_slots=0
    )
    left_s = (100.0 + left) - 100.0
    assert (reason is not None) == (ahead / drain > left_s)
