"""Cron expressions of planned restarts, as APScheduler triggers with cron's meaning."""

from __future__ import annotations

import re
from typing import Any

from apscheduler.triggers.cron import CronTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CronError(ValueError):
    pass


def _cron_weekdays(field: str) -> str:
    # cron counts Sunday as 0 (and 7); APScheduler counts Monday as 0. Names mean the
    # same to both, so numbers become names.
    return re.sub(
        r"\d+", lambda m: _DAY_NAMES[int(m.group())] if int(m.group()) < 8 else m.group(), field
    )


def cron_fields(expression: str) -> dict[str, Any]:
    """`m h dom mon dow` or, with seconds first, `s m h dom mon dow`."""
    parts = expression.split()
    if len(parts) == 5:
        names = ("minute", "hour", "day", "month", "day_of_week")
    elif len(parts) == 6:
        names = ("second", "minute", "hour", "day", "month", "day_of_week")
    else:
        raise CronError(
            f"must have 5 fields (minute hour day month weekday) or 6 (seconds first),"
            f" got {len(parts)}"
        )
    fields = dict(zip(names, parts, strict=True))
    if "second" not in fields:
        fields["second"] = "0"
    fields["day_of_week"] = _cron_weekdays(fields["day_of_week"])
    return fields


def cron_trigger(expression: str) -> CronTrigger:
    try:
        return CronTrigger(**cron_fields(expression))
    except ValueError as exc:
        raise CronError(str(exc)) from None
