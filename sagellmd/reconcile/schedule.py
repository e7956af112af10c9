"""Planned restarts: one APScheduler job per engine with a `restart_schedule`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger

from sagellmd.cron import CronSchedule, parse_cron
from sagellmd.desired import DesiredEngine
from sagellmd.instance import InstanceState
from sagellmd.reconcile.world import World

log = logging.getLogger(__name__)


class CronScheduleTrigger(BaseTrigger):
    """Fire times from our own cron parser, in the machine's local wall-clock time.

    APScheduler's CronTrigger numbers weekdays from Monday and lacks cron's
    day-of-month/day-of-week OR rule, so it would fire at other times than cron.
    """

    __slots__ = ("schedule",)

    def __init__(self, schedule: CronSchedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = previous_fire_time or now
        # Wall-clock arithmetic on naive local time; `astimezone()` then gives a naive local
        # time its real offset (across DST a skipped time lands an hour later, and a
        # repeated one fires once, at its first occurrence).
        local = after.astimezone().replace(tzinfo=None)
        found = self.schedule.next_after(local)
        return found.astimezone() if found is not None else None

    def __str__(self) -> str:
        return f"cron[{self.schedule.expression}]"


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
                    CronScheduleTrigger(parse_cron(expression)),
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
