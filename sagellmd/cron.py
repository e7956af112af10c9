"""Cron expressions of planned restarts: parsing and next fire times, with cron's meaning."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# Feb 29 with a weekday can take decades to come round; past this, the expression never fires.
_SEARCH_YEARS = 60


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_from: int = 0  # the number of the first name
    names_hint: str = ""


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, MONTH_NAMES, 1, "a month name (jan-dec)")
# 7 is Sunday as well as 0; `*` covers 0-6 only.
_WEEKDAY = _Field("day of week", 0, 7, DAY_NAMES, 0, "a day name (sun-sat)")


def _value(text: str, field: _Field) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.names_from
    if not text.isascii() or not text.isdigit():
        kind = f"a number or {field.names_hint}" if field.names else "a number"
        raise CronError(f"{field.label}: {text!r} is not {kind}")
    number = int(text)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.label}: {number} is out of range {field.low}-{field.high}")
    return number


def _item(item: str, field: _Field) -> set[int]:
    """One list item: `*`, `a`, `a-b`, each optionally `/step`."""
    if not item:
        raise CronError(f"{field.label}: empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isascii() or not step_text.isdigit():
            raise CronError(f"{field.label}: the step in {item!r} is not a number")
        step = int(step_text)
        if step < 1:
            raise CronError(f"{field.label}: a step must be at least 1, got {item!r}")
    if base == "*":
        # `*` on weekdays is 0-6, so `*/2` is Sun, Tue, Thu, Sat (not Sunday twice).
        low, high = field.low, 6 if field is _WEEKDAY else field.high
    elif base.count("-") == 1:
        start_text, end_text = base.split("-")
        low, high = _value(start_text, field), _value(end_text, field)
        if field is _WEEKDAY and high == 0 and low > 0:
            high = 7  # `sat-sun`, `mon-sun`: Sunday as the end of the week
        if low > high:
            raise CronError(f"{field.label}: the range {base} runs backwards")
    elif "-" in base:
        raise CronError(f"{field.label}: {item!r} is not a value, a range a-b or a step a-b/n")
    else:
        low = _value(base, field)
        # `a/n` is a-max/n, as in most crons; a lone `a` is just a.
        high = field.high if slash else low
    values = set(range(low, high + 1, step))
    if field is _WEEKDAY and 7 in values:
        values = (values - {7}) | {0}
    return values


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _item(item, field)
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression; `next_after` gives its fire times in wall-clock time."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: datetime) -> bool:
        """Cron's rule: when both day fields are restricted, either one matching is enough."""
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, when: datetime) -> datetime | None:
        """The first fire time strictly after `when` (naive or aware, kept as given)."""
        current = when.replace(microsecond=0) + timedelta(seconds=1)
        limit = when.year + _SEARCH_YEARS
        while current.year <= limit:
            if current.month not in self.months:
                current = _next_month(current)
            elif not self.matches_day(current):
                current = current.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0, second=0) + timedelta(hours=1)
            elif current.minute not in self.minutes:
                current = current.replace(second=0) + timedelta(minutes=1)
            elif current.second not in self.seconds:
                current += timedelta(seconds=1)
            else:
                return current
        return None


def _next_month(when: datetime) -> datetime:
    first = when.replace(day=1, hour=0, minute=0, second=0)
    return (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )


def parse_cron(expression: str) -> CronSchedule:
    """`m h dom mon dow` or, with seconds first, `s m h dom mon dow`."""
    parts = expression.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(
            "must have 5 fields (minute hour day-of-month month day-of-week)"
            f" or 6 (seconds first), got {len(parts)}"
        )
    second, minute, hour, day, month, weekday = parts
    # As in Vixie cron, a day field that starts with `*` (also `*/2`) is unrestricted.
    schedule = CronSchedule(
        expression=expression,
        seconds=_parse_field(second, _SECOND),
        minutes=_parse_field(minute, _MINUTE),
        hours=_parse_field(hour, _HOUR),
        days=_parse_field(day, _DAY),
        months=_parse_field(month, _MONTH),
        weekdays=_parse_field(weekday, _WEEKDAY),
        days_restricted=not day.startswith("*"),
        weekdays_restricted=not weekday.startswith("*"),
    )
    _check_some_day_exists(schedule)
    return schedule


def _check_some_day_exists(schedule: CronSchedule) -> None:
    # Only the day of month can rule out every day (Feb 30); a weekday always comes round.
    if schedule.days_restricted and schedule.weekdays_restricted:
        return
    longest = max(calendar.monthrange(2024, month)[1] for month in schedule.months)
    if min(schedule.days) > longest:
        raise CronError(
            f"never fires: no month of {sorted(schedule.months)} has day"
            f" {', '.join(str(d) for d in sorted(schedule.days))}"
        )
