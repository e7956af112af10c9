"""Putting engines to sleep and waking them (vLLM sleep mode), off the loop: the HTTP call
runs as a task; its answer is recorded as a transition and wakes the loop."""

from __future__ import annotations

import logging

from sagellmd.instance import (
    InstanceState,
    StopIntent,
    became_unhealthy,
    begin_stop,
    begin_wake,
    fell_asleep,
)
from sagellmd.reconcile.actions import Sleep, Wake
from sagellmd.reconcile.engine_tasks import EngineTasks
from sagellmd.reconcile.observe import Prober
from sagellmd.reconcile.world import World
from sagellmd.runtime.engine_calls import post_engine
from sagellmd.runtime.kinds import kind_for
from sagellmd.runtime.kinds.base import ENGINE_HOST

log = logging.getLogger(__name__)

# Level 1 offloads the weights to CPU memory and drops the KV cache: seconds for a large LLM.
SLEEP_TIMEOUT_S = 300.0


class SleepMode:
    """One task per engine changing between awake and asleep."""

    def __init__(self, world: World, prober: Prober) -> None:
        self._world = world
        self._prober = prober
        self._tasks = EngineTasks("sleep-mode")

    def _host(self, engine_id: str) -> str:
        desired = self._world.desired_engine(engine_id)
        instance = self._world.instances.get(engine_id)
        remote = self._world.engine_host(instance.node if instance else None)
        if remote is not None:
            return remote
        return kind_for(desired.spec.runtime).probe_host(desired.spec) if desired else ENGINE_HOST

    def sleep(self, action: Sleep) -> None:
        """Stopping with intent sleep (its reservation held, no request routed), then asleep."""
        world = self._world
        instance = world.instances[action.engine_id]
        self._prober.cancel(action.engine_id)
        world.record(begin_stop(instance, StopIntent.SLEEP, action.reason), intent=True)
        self._tasks.run(
            action.engine_id, self._sleep(action.engine_id, instance.pid, action.reason)
        )

    def wake(self, action: Wake) -> None:
        """Starting again with the asleep process and its GPUs; the probe makes it ready."""
        world = self._world
        instance = world.instances[action.engine_id]
        transition = begin_wake(
            instance, world.clock(), action.waiting, action.gpus, action.gpu_bytes
        )
        world.record(transition, intent=True)
        self._tasks.run(action.engine_id, self._wake(action.engine_id, instance.pid))

    def cancel(self, engine_id: str) -> None:
        self._tasks.cancel(engine_id)

    def cancel_all(self) -> None:
        self._tasks.cancel_all()

    async def _post(self, engine_id: str, path: str, timeout_s: float) -> tuple[bool, str]:
        """POST to the engine's own port; this engine's task is done with that answer."""
        port = self._world.instances[engine_id].port
        answer = (
            await post_engine(self._host(engine_id), port, path, timeout_s)
            if port is not None
            else (False, "no port")
        )
        self._tasks.finished(engine_id)
        return answer

    async def _sleep(self, engine_id: str, pid: int | None, reason: str) -> None:
        world = self._world
        ok, detail = await self._post(engine_id, "/sleep?level=1", SLEEP_TIMEOUT_S)
        current = world.instances.get(engine_id)
        if current is None or current.pid != pid or current.stop_intent is not StopIntent.SLEEP:
            return  # it exited (and is idle already) or was stopped meanwhile
        if ok:
            world.record(fell_asleep(current, reason))
        else:
            # It cannot sleep: stop it instead; its exit leaves it idle all the same.
            log.warning("engine=%s cannot sleep (%s): stopping it", engine_id, detail)
            world.event(engine_id, "stopping", f"cannot sleep ({detail}): stopping the process")
            world.watcher.stop(engine_id, world.settings.stop_grace_s)
        world.wake()

    async def _wake(self, engine_id: str, pid: int | None) -> None:
        world = self._world
        desired = world.desired_engine(engine_id)
        timeout = desired.spec.startup_timeout_s if desired else SLEEP_TIMEOUT_S
        ok, detail = await self._post(engine_id, "/wake_up", timeout)
        current = world.instances.get(engine_id)
        if current is None or current.pid != pid or current.state is not InstanceState.STARTING:
            return
        if ok:
            self._prober.start(engine_id, current.pid)
        else:
            world.record(became_unhealthy(current, f"cannot wake: {detail}"))
        world.wake()
