"""At most one asyncio task per engine for one job (probing it, putting it to sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class EngineTasks:
    """A new task for an engine replaces (cancels) the one it had."""

    def __init__(self, job: str) -> None:
        self._job = job
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def run(self, engine_id: str, call: Coroutine[Any, Any, None]) -> None:
        self.cancel(engine_id)
        self._tasks[engine_id] = asyncio.get_running_loop().create_task(
            call, name=f"{self._job} {engine_id}"
        )

    def finished(self, engine_id: str) -> None:
        """A task says it is done, so a later cancel does not reach into what it left."""
        self._tasks.pop(engine_id, None)

    def cancel(self, engine_id: str) -> None:
        task = self._tasks.pop(engine_id, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for engine_id in list(self._tasks):
            self.cancel(engine_id)
