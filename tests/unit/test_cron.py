"""Cron expressions: a table of expressions against their next fire times, and errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sagellmd.cron import CronError, parse_cron
from sagellmd.errors import SpecError
from sagellmd.reconcile.schedule import CronScheduleTrigger
from sagellmd.spec import parse_engine

# Monday 1 January 2024, midnight: every fire time below is strictly after it.
START = datetime(2024, 1, 1, 0, 0, 0)


def _fires(expression: str, count: int, start: datetime = START) -> list[str]:
    schedule = parse_cron(expression)
    times = []
    when = start
    for _ in range(count):
        found = schedule.next_after(when)
        assert found is not None
        times.append(found.strftime("%Y-%m-%d %H:%M:%S %a"))
        when = found
    return times


FIRE_TABLE = [
    # The two expressions of the issue: every weekday as a range, every second day.
    ("0 4 * * 0-6", ["2024-01-01 04:00:00 Mon", "2024-01-02 04:00:00 Tue"]),
    (
        "0 4 * * */2",
        [
            "2024-01-02 04:00:00 Tue",
            "2024-01-04 04:00:00 Thu",
            "2024-01-06 04:00:00 Sat",
            "2024-01-07 04:00:00 Sun",
            "2024-01-09 04:00:00 Tue",
        ],
    ),
    # 0 and 7 are both Sunday.
    ("0 4 * * 0", ["2024-01-07 04:00:00 Sun", "2024-01-14 04:00:00 Sun"]),
    ("0 4 * * 7", ["2024-01-07 04:00:00 Sun", "2024-01-14 04:00:00 Sun"]),
    ("0 4 * * 0,7", ["2024-01-07 04:00:00 Sun", "2024-01-14 04:00:00 Sun"]),
    (
        "0 0 * * 5-7",
        [
            "2024-01-05 00:00:00 Fri",
            "2024-01-06 00:00:00 Sat",
            "2024-01-07 00:00:00 Sun",
            "2024-01-12 00:00:00 Fri",
        ],
    ),
    # Day names, a range of them, and a range that ends on Sunday.
    (
        "30 2 * * mon-fri",
        [
            "2024-01-01 02:30:00 Mon",
            "2024-01-02 02:30:00 Tue",
            "2024-01-03 02:30:00 Wed",
            "2024-01-04 02:30:00 Thu",
            "2024-01-05 02:30:00 Fri",
            "2024-01-08 02:30:00 Mon",
        ],
    ),
    ("0 0 * * sat-sun", ["2024-01-06 00:00:00 Sat", "2024-01-07 00:00:00 Sun"]),
    # Month names (any case), lists mixing names and ranges.
    ("0 0 1 jan,jul *", ["2024-07-01 00:00:00 Mon", "2025-01-01 00:00:00 Wed"]),
    ("0 9 * JAN-MAR,Oct Sat", ["2024-01-06 09:00:00 Sat", "2024-01-13 09:00:00 Sat"]),
    ("5 0 * 8 *", ["2024-08-01 00:05:00 Thu", "2024-08-02 00:05:00 Fri"]),
    # Steps over `*`, over a range, and from a start (a-max/n).
    (
        "*/15 9-17/4 * * *",
        [
            "2024-01-01 09:00:00 Mon",
            "2024-01-01 09:15:00 Mon",
            "2024-01-01 09:30:00 Mon",
            "2024-01-01 09:45:00 Mon",
            "2024-01-01 13:00:00 Mon",
        ],
    ),
    (
        "10-50/20 * * * *",
        [
            "2024-01-01 00:10:00 Mon",
            "2024-01-01 00:30:00 Mon",
            "2024-01-01 00:50:00 Mon",
            "2024-01-01 01:10:00 Mon",
        ],
    ),
    ("5/15 * * * *", ["2024-01-01 00:05:00 Mon", "2024-01-01 00:20:00 Mon"]),
    ("23 0-20/2 * * *", ["2024-01-01 00:23:00 Mon", "2024-01-01 02:23:00 Mon"]),
    ("0 0 */10 * *", ["2024-01-11 00:00:00 Thu", "2024-01-21 00:00:00 Sun"]),
    # Day of month and day of week both restricted: either one matches (cron's OR rule).
    (
        "0 12 13 * fri",
        [
            "2024-01-05 12:00:00 Fri",
            "2024-01-12 12:00:00 Fri",
            "2024-01-13 12:00:00 Sat",
            "2024-01-19 12:00:00 Fri",
        ],
    ),
    (
        "0 0 1-7 * mon",
        [
            "2024-01-02 00:00:00 Tue",
            "2024-01-03 00:00:00 Wed",
            "2024-01-04 00:00:00 Thu",
            "2024-01-05 00:00:00 Fri",
            "2024-01-06 00:00:00 Sat",
            "2024-01-07 00:00:00 Sun",
            "2024-01-08 00:00:00 Mon",
            "2024-01-15 00:00:00 Mon",
        ],
    ),
    # A field that starts with `*` counts as unrestricted (as in Vixie cron): both must match.
    (
        "0 12 13 * */2",
        ["2024-01-13 12:00:00 Sat", "2024-02-13 12:00:00 Tue", "2024-04-13 12:00:00 Sat"],
    ),
    # Days that not every month has.
    (
        "0 0 31 * *",
        ["2024-01-31 00:00:00 Wed", "2024-03-31 00:00:00 Sun", "2024-05-31 00:00:00 Fri"],
    ),
    ("0 0 29 2 *", ["2024-02-29 00:00:00 Thu", "2028-02-29 00:00:00 Tue"]),
    ("59 23 31 12 *", ["2024-12-31 23:59:00 Tue", "2025-12-31 23:59:00 Wed"]),
    # Six fields: seconds first.
    (
        "*/20 * * * * *",
        ["2024-01-01 00:00:20 Mon", "2024-01-01 00:00:40 Mon", "2024-01-01 00:01:00 Mon"],
    ),
    ("30 0 4 * * sun", ["2024-01-07 04:00:30 Sun", "2024-01-14 04:00:30 Sun"]),
]


@pytest.mark.parametrize(("expression", "expected"), FIRE_TABLE, ids=[e for e, _ in FIRE_TABLE])
def test_next_fire_times(expression: str, expected: list[str]):
    assert _fires(expression, len(expected)) == expected


def test_next_fire_is_strictly_after_a_matching_time():
    assert _fires("0 4 * * *", 1, datetime(2024, 1, 1, 4, 0, 0)) == ["2024-01-02 04:00:00 Tue"]
    assert _fires("0 4 * * *", 1, datetime(2024, 1, 1, 3, 59, 59)) == ["2024-01-01 04:00:00 Mon"]


ERROR_TABLE = [
    ("0 4 * *", "must have 5 fields"),
    ("0 0 1 1 1 1 1", "must have 5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("0 24 * * *", "hour: 24 is out of range 0-23"),
    ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
    ("0 0 * 13 *", "month: 13 is out of range 1-12"),
    ("0 4 * * 8", "day of week: 8 is out of range 0-7"),
    ("61 0 4 * * *", "second: 61 is out of range 0-59"),
    ("*/0 * * * *", "minute: a step must be at least 1"),
    ("5-1 * * * *", "minute: the range 5-1 runs backwards"),
    ("0 0 * * fri-mon", "day of week: the range fri-mon runs backwards"),
    ("0 0 * foo *", "month: 'foo' is not a number or a month name (jan-dec)"),
    ("0 0 * * funday", "day of week: 'funday' is not a number or a day name (sun-sat)"),
    ("0 0 L * *", "day of month: 'L' is not a number"),
    ("1,,2 * * * *", "minute: empty list item"),
    ("1-2-3 * * * *", "minute: '1-2-3'"),
    ("0 0 31 2 *", "never fires"),
    ("0 0 31 2,4,6,9,11 *", "never fires"),
]


@pytest.mark.parametrize(("expression", "message"), ERROR_TABLE, ids=[e for e, _ in ERROR_TABLE])
def test_invalid_expressions_name_the_field(expression: str, message: str):
    with pytest.raises(CronError) as raised:
        parse_cron(expression)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "expression", ["0 4 * * 0-6", "0 4 * * */2", "0 4 * * 7", "0 0 * * mon-sun"]
)
def test_spec_accepts_standard_cron(expression: str):
    spec = parse_engine({"name": "e", "model": "m", "restart_schedule": expression})
    assert spec.restart_schedule == expression


def test_spec_error_names_the_field():
    with pytest.raises(SpecError) as raised:
        parse_engine({"name": "e", "model": "m", "restart_schedule": "0 4 * * 8"})
    message = str(raised.value)
    assert message.startswith("restart_schedule: ")
    assert "day of week: 8 is out of range 0-7" in message


def test_trigger_fires_on_local_wall_clock_times():
    trigger = CronScheduleTrigger(parse_cron("0 4 * * */2"))
    now = datetime(2024, 1, 1, 12, 0, 0).astimezone()  # Monday noon, local time
    first = trigger.get_next_fire_time(None, now)
    assert first is not None and first.tzinfo is not None
    local = first.astimezone().replace(tzinfo=None)
    assert local == datetime(2024, 1, 2, 4, 0, 0)
    second = trigger.get_next_fire_time(first, now)
    assert second is not None
    assert second.astimezone().replace(tzinfo=None) == datetime(2024, 1, 4, 4, 0, 0)


def test_trigger_accepts_any_time_zone_for_now():
    trigger = CronScheduleTrigger(parse_cron("*/20 * * * * *"))
    now = datetime(2024, 1, 1, 12, 0, 5, tzinfo=timezone(timedelta(hours=-7)))
    found = trigger.get_next_fire_time(None, now)
    assert found is not None and found - now == timedelta(seconds=15)
