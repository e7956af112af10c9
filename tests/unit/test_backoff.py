"""Owns the tests of sagellmd/backoff.py: immediate first restart, doubling, cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagellmd.backoff import backoff_delay


@pytest.mark.parametrize("failures", [-1, 0, 1])
def test_first_restart_is_immediate(failures):
    assert backoff_delay(failures, 1.0, 300.0) == 0.0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (10, 256.0)],
)
def test_delay_doubles_from_the_base(failures, expected):
    assert backoff_delay(failures, 1.0, 1000.0) == expected


def test_delay_uses_the_base():
    assert [backoff_delay(n, 2.5, 1000.0) for n in range(1, 6)] == [0.0, 2.5, 5.0, 10.0, 20.0]


@pytest.mark.parametrize("failures", [11, 12, 50, 200, 1000, 1025])
def test_delay_is_capped(failures):
    assert backoff_delay(failures, 1.0, 300.0) == 300.0


def test_cap_below_base_wins():
    assert backoff_delay(2, 10.0, 3.0) == 3.0


@given(
    failures=st.integers(min_value=0, max_value=500),
    base=st.floats(min_value=0.01, max_value=100.0),
    cap=st.floats(min_value=0.01, max_value=10_000.0),
)
def test_delay_is_monotonic_and_bounded(failures, base, cap):
    now = backoff_delay(failures, base, cap)
    after = backoff_delay(failures + 1, base, cap)
    assert 0.0 <= now <= after <= cap


def test_delay_stays_capped_after_very_many_crashes():
    assert backoff_delay(1026, 1.0, 300.0) == 300.0
