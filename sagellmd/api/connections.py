"""The HTTP connections the API accepts: a deadline on every request head and a cap on
idle connections, so connections that send nothing cannot starve /healthz."""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Descriptors kept for everything but API connections: SQLite, logs, engine pidfds, pipes.
RESERVED_DESCRIPTORS = 256
MAX_IDLE_CONNECTIONS = 1024


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (1024 is a common soft default); the
    soft limit after it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %s to %s: %s", soft, target, exc)
    return soft


@dataclass
class ConnectionGuard:
    """Shared by the connections of one server: which ones wait for a request head."""

    header_timeout_s: float
    # Connections in all (idle and busy) before new requests get a quick 503.
    max_connections: int
    max_idle: int
    # Insertion-ordered: the first is the one that has waited longest.
    idle: dict[GuardedH11Protocol, None] = field(default_factory=dict)

    @classmethod
    def for_descriptors(cls, header_timeout_s: float, descriptors: int) -> ConnectionGuard:
        budget = max(64, descriptors - RESERVED_DESCRIPTORS)
        return cls(header_timeout_s, budget, min(MAX_IDLE_CONNECTIONS, budget // 2))

    def protocol_class(self) -> type[GuardedH11Protocol]:
        return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    def waiting(self, connection: GuardedH11Protocol) -> None:
        self.idle.pop(connection, None)
        self.idle[connection] = None
        # Evict the longest-waiting: a flood of idle sockets must leave room for /healthz.
        while len(self.idle) > self.max_idle:
            oldest = next(iter(self.idle))
            self.idle.pop(oldest)
            oldest.close_idle("too many idle connections")

    def busy(self, connection: GuardedH11Protocol) -> None:
        self.idle.pop(connection, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head (h11 has none)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _await_head(self) -> None:
        self._cancel_deadline()
        self._head_deadline = self.loop.call_later(
            self.guard.header_timeout_s, self.close_idle, "no complete request head in time"
        )
        self.guard.waiting(self)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def close_idle(self, why: str) -> None:
        """Close a connection that has no request in progress."""
        self._cancel_deadline()
        self.guard.busy(self)
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request came in after all
        if not self.transport.is_closing():
            log.debug("closing connection from %s: %s", self.client, why)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._cancel_deadline()
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request that the parent handles next clears it again.
        self._await_head()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.guard.busy(self)
        super().connection_lost(exc)
