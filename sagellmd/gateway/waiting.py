"""What a request holds while it waits: its ticket, its place, and the queue of its model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sagellmd.gateway.admission import DrainRate
from sagellmd.gateway.queueing import WaitQueue
from sagellmd.gateway.routes import ModelGroup, Route


@dataclass(slots=True)
class Ticket:
    """What a request holds while it waits or runs: its place and the engines it tried."""

    arrived: float
    priority: int = 0
    deadline: float | None = None
    client: str = ""
    tried: set[str] = field(default_factory=set)
    queued_s: float = 0.0


@dataclass(slots=True)
class Pending:
    """A waiter's side of the queue: how it is answered, and the queue it is in now."""

    future: asyncio.Future[Route]
    ticket: Ticket
    key: bytes | None
    home: GroupQueue


@dataclass(slots=True)
class GroupQueue:
    group: ModelGroup
    name: str
    queue: WaitQueue
    policy: str
    drain: DrainRate = field(default_factory=DrainRate)
    # The names requests waiting here asked for: a new table may route them elsewhere.
    names: set[str] = field(default_factory=set)
    # Dispatch to first byte, smoothed: the part of a TTFT deadline the engine itself takes.
    first_byte_s: float = 0.0
