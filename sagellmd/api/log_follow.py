"""`GET /v1/engines/{id}/logs?after=OFFSET&wait=S`: the lines written after OFFSET, as soon
as there are any. An engine writes its log without telling the daemon, so the file's size is
looked at every POLL_S (one stat); the event hub still ends the wait when the daemon stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sagellmd.api.long_poll import long_poll
from sagellmd.cluster.ray_backend import AgentUnreachable, NodeUnreachable
from sagellmd.events import EventHub
from sagellmd.runtime.logs import LogChunk, log_size, read_after

if TYPE_CHECKING:
    from sagellmd.cluster.ray_backend import NodeAgent

# A read of a log on another node takes milliseconds; a node going away fails it in this.
AGENT_TIMEOUT_S = 10.0

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


# An agent is asked over Ray: a few times a second is enough for a person reading along.
REMOTE_POLL_S = 0.25


async def remote_log(
    request: Request,
    hub: EventHub,
    agent: NodeAgent,
    engine_id: str,
    tail: int,
    after: str | None,
    wait_s: float,
) -> dict[str, Any]:
    """The same answers for an engine on another node, read by its agent there."""
    where = {"engine": engine_id, "node": agent.node, "path": f"{agent.node}:logs/{engine_id}"}
    try:
        if after is None:
            found = await agent.call_async("read_tail", engine_id, tail, timeout_s=AGENT_TIMEOUT_S)
            return {
                **where,
                "lines": found.lines,
                "truncated": found.truncated,
                "max_bytes": found.max_bytes,
                "offset": found.size,
            }
        deadline = time.monotonic() + wait_s
        while True:
            chunk = await agent.call_async(
                "read_after", engine_id, int(after), timeout_s=AGENT_TIMEOUT_S
            )
            remaining = deadline - time.monotonic()
            done = chunk.lines or chunk.reset or remaining <= 0 or hub.closed
            if done or await request.is_disconnected():
                return {**where, "lines": chunk.lines, "offset": chunk.offset, "reset": chunk.reset}
            await asyncio.sleep(min(REMOTE_POLL_S, remaining))
    except AgentUnreachable as exc:
        raise NodeUnreachable(
            f"the log of {engine_id} is on node {agent.node}, whose agent does not answer"
            f" ({exc.detail}); try again when the node is back",
            {"node": agent.node},
        ) from None
