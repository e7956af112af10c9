"""Restart backoff after crashes: the policy and its arithmetic (at once, then doubling to a cap).

Pure; the instance transitions, the planner and the loop's events all compute the same delay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """The first delay after two crashes in a row, and the cap of the doubling."""

    base_s: float = 1.0
    max_s: float = 300.0


def backoff_delay(failures: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before the restart that follows the `failures`-th crash in a row."""
    if failures <= 1:
        return 0.0
    # Cap the exponent first: 2**1024 does not fit in a float.
    return min(base_s * 2.0 ** min(failures - 2, 64), max_s)
