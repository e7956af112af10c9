"""`GET /v1/engines/{id}/logs?after=OFFSET&wait=S`: the lines written after OFFSET, as soon
as there are any. An engine writes its log without telling the daemon, so the file's size is
looked at every POLL_S (one stat); the event hub still ends the wait when the daemon stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from starlette.requests import Request

from sagellmd.api.long_poll import client_gone
from sagellmd.events import EventHub
from sagellmd.runtime.logs import LogChunk, log_size, read_after

POLL_S = 0.1


async def follow_log(
    request: Request, hub: EventHub, path: Path, after: int, wait_s: float
) -> LogChunk:
    """The first read with lines (or a reset) within `wait_s`; else an empty one at the end,
    or when the client left or the daemon stops."""
    deadline = time.monotonic() + wait_s
    gone = asyncio.ensure_future(client_gone(request))
    try:
        while True:
            seen = log_size(path)
            # A thread: a burst of output can be a megabyte to read and split.
            chunk = await asyncio.to_thread(read_after, path, after)
            if chunk.lines or chunk.reset:
                return chunk
            while log_size(path) == seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or hub.closed or gone.done():
                    return chunk
                waiter = asyncio.ensure_future(hub.wait(min(remaining, POLL_S)))
                await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
