"""`GET /v1/engines/{id}/logs?after=OFFSET&wait=S`: the lines written after OFFSET, as soon
as there are any. An engine writes its log without telling the daemon, so the file's size is
looked at every POLL_S (one stat); the event hub still ends the wait when the daemon stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from starlette.requests import Request

from sagellmd.api.long_poll import long_poll
from sagellmd.events import EventHub
from sagellmd.runtime.logs import LogChunk, log_size, read_after

POLL_S = 0.1


async def follow_log(
    request: Request, hub: EventHub, path: Path, after: int, wait_s: float
) -> LogChunk:
    """The first read with lines (or a reset) within `wait_s`; else an empty one at the end,
    or when the client left or the daemon stops."""
    deadline = time.monotonic() + wait_s
    while True:
        seen = log_size(path)
        # A thread: a burst of output can be a megabyte to read and split.
        chunk = await asyncio.to_thread(read_after, path, after)
        remaining = deadline - time.monotonic()
        if chunk.lines or chunk.reset or remaining <= 0 or hub.closed:
            return chunk
        grown = lambda size, seen=seen: size != seen  # noqa: E731
        size = await long_poll(request, hub, remaining, lambda: log_size(path), grown, POLL_S)
        if size == seen:  # the deadline, the client gone, or the daemon stopping
            return chunk
