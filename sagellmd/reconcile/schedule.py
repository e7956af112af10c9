"""Planned restarts: one APScheduler cron job per engine with a `restart_schedule`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from apscheduler.schedulers.base import BaseScheduler

from sagellmd.cron import cron_trigger
from sagellmd.instance import InstanceState
from sagellmd.reconcile.actions import DesiredEngine
from sagellmd.reconcile.world import World

log = logging.getLogger(__name__)


class RestartSchedule:
    """Keeps the cron jobs equal to the desired engines' schedules."""

    def __init__(self, scheduler: BaseScheduler, world: World) -> None:
        self._scheduler = scheduler
        self._world = world
        self._jobs: dict[str, str] = {}  # engine id -> cron expression

    def sync(self, desired: Iterable[DesiredEngine]) -> None:
        wanted = {e.id: e.spec.restart_schedule for e in desired if e.spec.restart_schedule}
        for engine_id, expression in list(self._jobs.items()):
            if wanted.get(engine_id) != expression:
                self._scheduler.remove_job(f"restart:{engine_id}")
                del self._jobs[engine_id]
        for engine_id, expression in wanted.items():
            if engine_id not in self._jobs:
                self._scheduler.add_job(
                    self._fire,
                    cron_trigger(expression),
                    args=[engine_id, expression],
                    id=f"restart:{engine_id}",
                    replace_existing=True,
                )
                self._jobs[engine_id] = expression

    async def _fire(self, engine_id: str, expression: str) -> None:
        world = self._world
        instance = world.instances.get(engine_id)
        if instance is None or instance.state is not InstanceState.READY:
            # A restart replaces a serving engine; one that is not serving is left to
            # its own start or backoff.
            state = instance.state.value if instance else "not started"
            world.event(engine_id, "scheduled-restart", f"skipped ({state}); cron {expression}")
            return
        world.store.request_restart(engine_id)
        world.event(engine_id, "scheduled-restart", f"restarting now; cron {expression}")
        world.wake()
