"""Long-polls: read now, and again on every event-hub wake, until there is news or time is up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request

from sagellmd.events import EventHub

T = TypeVar("T")


async def client_gone(request: Request) -> None:
    """Returns once the client has closed its connection (the body is read through)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def long_poll(
    request: Request,
    hub: EventHub,
    wait_s: float,
    read: Callable[[], T],
    news: Callable[[T], bool],
    poll_s: float | None = None,
) -> T:
    """`read()` once, then after each hub wake until `news` of it, `wait_s` passed, the hub
    closed (the daemon stops) or the client left; the last value read is the answer.
    `poll_s`: also read again that often (news the hub is not told of, such as a file growing)."""
    deadline = time.monotonic() + wait_s
    # A client that goes away must not keep its handler (and a connection slot) until the
    # deadline; nothing else would tell the handler.
    gone = asyncio.ensure_future(client_gone(request))
    try:
        while True:
            value = read()
            remaining = deadline - time.monotonic()
            if news(value) or remaining <= 0 or hub.closed or gone.done():
                return value
            pause = remaining if poll_s is None else min(remaining, poll_s)
            waiter = asyncio.ensure_future(hub.wait(pause))
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
