"""Restart backoff arithmetic: first restart at once, then doubling to a cap."""

from __future__ import annotations


def backoff_delay(failures: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before the restart that follows the `failures`-th crash in a row."""
    if failures <= 1:
        return 0.0
    return min(base_s * 2 ** (failures - 2), max_s)
