"""Restart backoff arithmetic: first restart at once, then doubling to a cap."""

from __future__ import annotations


def backoff_delay(failures: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before the restart that follows the `failures`-th crash in a row."""
    if failures <= 1:
        return 0.0
    # Cap the exponent first: 2**1024 does not fit in a float.
    return min(base_s * 2.0 ** min(failures - 2, 64), max_s)
