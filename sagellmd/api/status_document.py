"""The serialized `GET /v1/status` document, built once per change of what it shows."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

# A document is rebuilt at least this often even when nothing was notified: a backstop for
# any state that changes without an event (the last pass's time changes with every pass).
MAX_AGE_S = 1.0


@dataclass
class StatusDocuments:
    """The last document serialized for each kind of reader, and the state it shows.

    The daemon's state changes through recorded transitions, events and desired-state
    changes, each of which notifies the event hub, and through reconcile passes: the state
    (hub version, passes) stays the same exactly while the document would, and every reader
    between two changes gets the same bytes, serialized once.
    """

    max_age_s: float = MAX_AGE_S
    clock: Callable[[], float] = time.monotonic
    # reader -> (state it was built from, when, the bytes)
    _cached: dict[Hashable, tuple[Hashable, float, bytes]] = field(default_factory=dict)

    def get(self, state: Hashable, reader: Hashable, build: Callable[[], dict[str, Any]]) -> bytes:
        """The document for `reader` (e.g. with or without the token) at `state`."""
        now = self.clock()
        cached = self._cached.get(reader)
        if cached is not None and cached[0] == state and now - cached[1] < self.max_age_s:
            return cached[2]
        body = bytes(JSONResponse(build()).body)
        self._cached[reader] = (state, now, body)
        return body
