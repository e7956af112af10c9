"""How the store's timestamps (float seconds since the epoch) read in answers: ISO 8601, UTC."""

from __future__ import annotations

import time


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
