"""Wakes long-polling readers of /v1/events when something new is recorded."""

from __future__ import annotations

import asyncio
import math


class EventHub:
    """A broadcast signal: every waiter wakes on the next `notify`."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.closed = False
        # Counts notifications: what readers derive from the state can be kept while it
        # stays the same (api/status_document.py).
        self.version = 0

    def close(self) -> None:
        """The daemon is stopping: wake every waiter, and make new waits return at once."""
        self.closed = True
        self.notify()

    def notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout_s: float) -> bool:
        """True if something was recorded within the timeout."""
        if not math.isfinite(timeout_s):
            # A NaN deadline in asyncio's timer heap breaks its order: other timers (probes,
            # stop grace periods) then fire late or never.
            raise ValueError(f"timeout must be a finite number of seconds, got {timeout_s}")
        if self.closed:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
            return True
        except TimeoutError:
            return False
