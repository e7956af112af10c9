"""The store's connection to SQLite: one engine, one clock, a session per call."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session


class StoreSessions:
    """What every part of the `Store` shares: where the rows are, and what time it is."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)
