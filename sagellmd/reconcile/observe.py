"""Observations that drive the loop: process exits (pidfd) and health-probe results."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from sagellmd.instance import (
    LIVE_STATES,
    Instance,
    InstanceState,
    Transition,
    became_ready,
    became_unhealthy,
    describe_exit,
    exited,
    retired,
)
from sagellmd.reconcile.engine_tasks import EngineTasks
from sagellmd.reconcile.world import World
from sagellmd.runtime.kinds import COMMAND, kind_for
from sagellmd.runtime.kinds.base import ENGINE_HOST
from sagellmd.runtime.logs import QUOTED_LINE_CHARS, shorten
from sagellmd.runtime.probe import probe_health

log = logging.getLogger(__name__)

FAST_STARTUP_PROBE_S = 0.025
FAST_STARTUP_PROBES_S = 2.0


def on_exit(
    world: World, engine_id: str, pid: int | None, code: int | None, signum: int | None
) -> None:
    """A watched process is gone: record how, decide what follows, wake the loop."""
    if engine_id.endswith("#retiring"):
        base = world.instances.get(engine_id.removesuffix("#retiring"))
        if base is not None and base.retiring is not None and base.retiring.pid == pid:
            world.record(retired(base, describe_exit(code, signum)))
            world.wake()
        return
    instance = world.instances.get(engine_id)
    if instance is None or instance.pid != pid:
        log.warning("engine=%s pid=%s exited but is not the current process", engine_id, pid)
        return
    desired = world.desired_engine(engine_id)
    policy = desired.spec.restart if desired else "never"
    kind = kind_for(desired.spec.runtime) if desired else COMMAND
    settings = world.settings
    transition = exited(
        instance,
        code,
        signum,
        world.clock(),
        policy,
        settings.reset_after_s,
        settings.backoff_base_s,
        settings.backoff_max_s,
        kind.clean_exit_signals,
    )
    if code not in (None, 0) and instance.stop_intent is None:
        # An engine that fails says why on its last line ("model not found ..."):
        # show it where the user looks, in status and events.
        whole = world.last_log_line(engine_id, instance.node)
        if whole is not None:
            # Status, events, verdicts and history quote it; the event keeps it whole.
            said = shorten(whole, QUOTED_LINE_CHARS)
            transition = Transition(
                dataclasses.replace(
                    transition.instance, message=f"{transition.instance.message}; it said: {said}"
                ),
                transition.event_type,
                f"{transition.message}; last log line: {said}",
                {"last_log_line": whole},
            )
    world.record(transition)
    world.wake()


class Prober:
    """One asyncio task per live process: fast startup probes, then slower liveness probes."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._tasks = EngineTasks("probe")

    def start(self, engine_id: str, pid: int) -> None:
        self._tasks.run(engine_id, self._run(engine_id, pid))

    def cancel(self, engine_id: str) -> None:
        self._tasks.cancel(engine_id)

    def cancel_all(self) -> None:
        self._tasks.cancel_all()

    def _current(self, engine_id: str, pid: int) -> Instance | None:
        instance = self._world.instances.get(engine_id)
        if instance is None or instance.pid != pid or instance.state not in LIVE_STATES:
            return None
        return instance

    async def _run(self, engine_id: str, pid: int) -> None:
        settings = self._world.settings
        desired = self._world.desired_engine(engine_id)
        kind = kind_for(desired.spec.runtime) if desired else COMMAND
        host = kind.probe_host(desired.spec) if desired else ENGINE_HOST
        current = self._world.instances.get(engine_id)
        host = self._world.engine_host(current.node if current else None) or host
        failures = 0
        # For its first seconds a starting engine is probed every 25 ms, then every interval:
        # one up in 0.1 s (llama.cpp, the gateway, an on-demand start) is seen ready within
        # tens of ms, and one loading for minutes is asked every interval like before.
        fast_until = time.monotonic() + FAST_STARTUP_PROBES_S
        while True:
            instance = self._current(engine_id, pid)
            if instance is None or instance.port is None:
                return
            healthy, detail = await probe_health(
                host,
                instance.port,
                settings.probe_timeout_s,
                kind.health_path,
                kind.health_status,
            )
            instance = self._current(engine_id, pid)
            if instance is None:
                return
            if instance.state is InstanceState.STARTING:
                if healthy:
                    self._world.record(became_ready(instance, self._world.clock()))
                    self._world.wake()
                    await asyncio.sleep(settings.liveness_interval_s)
                else:
                    fast = time.monotonic() < fast_until
                    await asyncio.sleep(
                        min(FAST_STARTUP_PROBE_S, settings.startup_probe_interval_s)
                        if fast
                        else settings.startup_probe_interval_s
                    )
                continue
            if healthy:
                failures = 0
                if instance.state is InstanceState.UNHEALTHY:
                    self._world.record(became_ready(instance, self._world.clock()))
            elif self._world.node_suspect(instance.node):
                # Its node's agent does not answer: Ray, not a probe, says whether the node
                # is gone (then the engine is lost, not failed).
                failures = 0
            else:
                failures += 1
                if failures >= settings.liveness_failures and instance.state is InstanceState.READY:
                    reason = f"health check failed {failures} times in a row: {detail}"
                    self._world.record(became_unhealthy(instance, reason))
                    self._world.wake()
            await asyncio.sleep(settings.liveness_interval_s)
