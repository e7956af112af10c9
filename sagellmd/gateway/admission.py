"""SLO admission: whether a request can still get its first byte by its deadline.

Pure: the drain rate is measured from the dispatch times the gateway records with its clock.
"""

from __future__ import annotations

from collections import deque

# A window is kept as this many buckets, so recording stays O(1) at thousands of requests/s.
_BUCKETS_PER_WINDOW = 50


class DrainRate:
    """How fast one model's queue drains: dispatches per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        self.window_s = window_s
        self._bucket_s = window_s / _BUCKETS_PER_WINDOW
        # A tenth of the window before the first figure: two dispatches 1 ms apart are no rate.
        self._min_span_s = window_s / 10
        self._buckets: deque[list] = deque()  # [bucket start, count], oldest first
        self._total = 0
        self._since: float | None = None  # start of the current run of measurements

    def record(self, now: float, count: int = 1) -> None:
        """`count` requests left the queue (were dispatched) at `now`."""
        self._prune(now)
        if self._since is None:
            self._since = now
        buckets = self._buckets
        if buckets and now - buckets[-1][0] < self._bucket_s:
            buckets[-1][1] += count
        else:
            buckets.append([now, count])
        self._total += count

    def per_second(self, now: float) -> float | None:
        """Dispatches per second; None until a tenth of a window has been measured.

        Also None after a window without any dispatch (idle is not a drain rate of 0): the
        measurement starts again with the next dispatch.
        """
        self._prune(now)
        if self._since is None:
            return None
        span = min(self.window_s, now - self._since)
        if span < self._min_span_s:
            return None
        return self._total / span

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        horizon = now - self.window_s
        while buckets and buckets[0][0] <= horizon:
            self._total -= buckets.popleft()[1]
        if not buckets:
            self._since = None


def slo_rejection(
    deadline: float, now: float, ahead: int, drain_per_s: float | None, free_slots: int
) -> str | None:
    """Why a request with this TTFT deadline cannot be met, in words; None to admit it.

    Rejected when the deadline has passed, or when no slot is free and the `ahead` requests
    before it take longer to drain than the time left. No measurement yet: admitted.
    """
    left_s = deadline - now
    if left_s <= 0:
        return f"the TTFT deadline passed {-left_s * 1000:.0f} ms ago"
    if free_slots > 0 or drain_per_s is None or ahead <= 0:
        return None
    if drain_per_s <= 0:
        return (
            f"the TTFT deadline ({left_s * 1000:.0f} ms left) cannot be met: {ahead} requests"
            " are ahead and the queue is not draining"
        )
    wait_s = ahead / drain_per_s
    if wait_s <= left_s:
        return None
    return (
        f"the TTFT deadline ({left_s * 1000:.0f} ms left) cannot be met: {ahead} requests are"
        f" ahead and the queue drains {drain_per_s:.0f}/s (about {wait_s * 1000:.0f} ms)"
    )
