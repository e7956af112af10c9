"""Carries out the planner's actions: spawn, stop, forget; intent is written before acting."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.placement import memory_fraction
from sagellmd.instance import (
    Instance,
    InstanceState,
    StopIntent,
    Transition,
    begin_start,
    begin_stop,
    begin_surge,
    made_idle,
    made_pending,
    retired,
    retiring_key,
    spawn_failed,
    spawned,
)
from sagellmd.models.download import hub_endpoint
from sagellmd.models.hub_reach import HubReachability
from sagellmd.models.last_used import touch_model
from sagellmd.models.resolve import needs_hub, spec_environ
from sagellmd.reconcile.actions import (
    Action,
    Forget,
    Idle,
    Pend,
    Replace,
    Retire,
    Sleep,
    Start,
    StartKind,
    Stop,
    Wait,
    Wake,
)
from sagellmd.reconcile.cluster_spawn import ClusterSpawn, Launch, describe
from sagellmd.reconcile.engine_ports import choose_port, taken_ports
from sagellmd.reconcile.hub_check import HubCheck
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.side_ports import choose_side_ports
from sagellmd.reconcile.sleep_mode import SleepMode
from sagellmd.reconcile.world import World
from sagellmd.runtime.argv import ENGINE_HOST, GpuAssignment, build_argv, build_env
from sagellmd.runtime.kinds import kind_for
from sagellmd.runtime.kinds.base import RuntimeKind
from sagellmd.runtime.logs import log_path
from sagellmd.runtime.process import RUN_MARKER, Markers, new_run_marker, spawn
from sagellmd.spec import EngineSpec

log = logging.getLogger(__name__)


def _with_side_ports(transition: Transition, side_ports: tuple[int, ...]) -> Transition:
    # The ports go with the instance record, so an adopting daemon knows them.
    return replace(transition, instance=replace(transition.instance, side_ports=side_ports))


class Executor(ClusterSpawn):
    """Turns actions into process operations and recorded transitions."""

    def __init__(self, world: World, prober: Prober) -> None:
        self._world = world
        self._prober = prober
        self._hub = HubReachability(world.wake)
        self.sleep_mode = SleepMode(world, prober)

    def execute(
        self, action: Action, desired: Mapping[str, DesiredEngine], generation: int
    ) -> None:
        if isinstance(action, Start):
            self._start(action.engine, generation, action)
        elif isinstance(action, Retire):
            self._retire(action.engine_id, action.reason)
        elif isinstance(action, Pend):
            self._pend(desired[action.engine_id], generation, action.reason)
        elif isinstance(action, Stop):
            self._stop(action.engine_id, action.intent, action.reason)
        elif isinstance(action, Replace):
            self._stop(action.engine_id, StopIntent.DELIBERATE, f"replacing: {action.reason}")
        elif isinstance(action, Forget):
            self._prober.cancel(action.engine_id)
            self._forget_group(action.engine_id)
            self._world.forget(action.engine_id)
        elif isinstance(action, Idle):
            self._idle(desired[action.engine_id], generation, action.reason)
        elif isinstance(action, Sleep):
            self.sleep_mode.sleep(action)
        elif isinstance(action, Wake):
            self.sleep_mode.wake(action)
        elif isinstance(action, Wait):
            pass  # the loop turns waits into timers

    def _idle(self, engine: DesiredEngine, generation: int, reason: str) -> None:
        current = self._world.instances.get(engine.id)
        self._world.record(
            made_idle(current, engine.id, engine.spec.spec_hash, generation, reason), intent=True
        )

    def _pend(self, engine: DesiredEngine, generation: int, reason: str) -> None:
        """Record that it waits, once per distinct reason (passes repeat often)."""
        current = self._world.instances.get(engine.id)
        if current is not None and current.message in (reason, f"waking: {reason}"):
            if current.state is InstanceState.PENDING or current.asleep:
                return
        if current is not None and current.asleep:
            # A sleeping process waits for room to wake in; it stays idle (and asleep).
            self._world.record(
                made_idle(current, engine.id, current.spec_hash, generation, f"waking: {reason}"),
                intent=True,
            )
            return
        self._world.record(
            made_pending(current, engine.id, engine.spec.spec_hash, generation, reason),
            intent=True,
        )

    def _start(self, engine: DesiredEngine, generation: int, action: Start) -> None:
        """What can be checked without a process, the intent on disk, the model, the process."""
        surge = action.kind is StartKind.SURGE
        port = self._start_port(engine, generation, surge)
        if port is None or not self._runtime_configured(engine, generation):
            return
        kind = kind_for(engine.spec.runtime)
        hub = self._hub_check(engine, generation, kind, surge)
        if hub is not None and hub.answer is None:
            return  # the answer wakes the loop
        side_ports = self._side_ports(engine, generation, port, surge)
        if side_ports is None:
            return
        if action.spread is not None:
            self._start_spread(engine, generation, action, action.spread, port, kind, hub)
            return
        assignment = self._assignment(action)
        node, gpus = self._node_of(action.gpus)
        local = replace(action, gpus=gpus)
        starting = self._begin_start(engine, generation, local, port, side_ports, node)
        if not self._model_available(starting, engine.spec, kind, hub):
            return
        if assignment is not None:
            assignment = GpuAssignment(gpus, assignment.memory_fraction)
        self._spawn(engine, starting, port, assignment, kind)

    def _start_port(self, engine: DesiredEngine, generation: int, surge: bool) -> int | None:
        """The port to start on; None (and the engine pending or replaced) when there is none."""
        port, why = choose_port(self._world, engine, surge)
        if port is None and surge:
            self._stop(engine.id, StopIntent.DELIBERATE, f"replacing (no room for both: {why})")
        elif port is None:
            self._pend(engine, generation, why)
        return port

    def _side_ports(
        self, engine: DesiredEngine, generation: int, port: int, surge: bool
    ) -> tuple[int, ...] | None:
        """A prefill or decode instance's KV side ports; None (pending) when none are free."""
        settings = self._world.settings
        taken = taken_ports(self._world, engine.id, surge) | {port}
        current = self._world.instances.get(engine.id)
        ports, why = choose_side_ports(
            engine.spec, current, taken, (settings.port_start, settings.port_end), surge
        )
        if ports is None and surge:
            self._stop(engine.id, StopIntent.DELIBERATE, f"replacing (no room for both: {why})")
        elif ports is None:
            self._pend(engine, generation, why)
        return ports

    def _runtime_configured(self, engine: DesiredEngine, generation: int) -> bool:
        runtimes = self._world.settings.runtimes
        if engine.spec.runtime in runtimes:
            return True
        known = ", ".join(sorted(runtimes))
        self._pend(
            engine, generation, f"runtime {engine.spec.runtime!r} is not configured ({known})"
        )
        return False

    def _hub_check(
        self, engine: DesiredEngine, generation: int, kind: RuntimeKind, surge: bool
    ) -> HubCheck | None:
        """Whether the hub answers, for an engine that would download its model; None when
        there is nothing to check."""
        settings, spec = self._world.settings, engine.spec
        if not (settings.hub_check and kind.downloads_models):
            return None
        if not needs_hub(spec, settings, [kind.name]):
            return None
        endpoint = hub_endpoint(spec_environ(spec))
        answer = self._hub.answer(endpoint)
        if answer is None:
            # Being checked (seconds at most); its answer wakes the loop.
            if not surge:
                self._pend(
                    engine,
                    generation,
                    f"checking that the Hugging Face hub at {endpoint} answers, to download"
                    f" {spec.model} (it is not on this machine)",
                )
        return HubCheck(endpoint, answer)

    def _begin_start(
        self,
        engine: DesiredEngine,
        generation: int,
        action: Start,
        port: int,
        side_ports: tuple[int, ...] = (),
        node: str | None = None,
        spans: tuple[tuple[str, tuple[int, ...]], ...] = (),
    ) -> Instance:
        """Record the start: the intent is on disk before anything is done (a full disk
        raises here)."""
        world, spec = self._world, engine.spec
        current = world.instances.get(engine.id)
        if action.kind is StartKind.SURGE and current is not None:
            surge = begin_surge(
                current,
                spec.spec_hash,
                generation,
                port,
                world.clock(),
                action.gpus,
                action.gpu_bytes,
                node,
            )
            starting = world.record(_with_side_ports(surge, side_ports), generation, intent=True)
            # The running process keeps serving under another key until the new is ready.
            self._prober.cancel(engine.id)
            world.watcher.rekey(engine.id, retiring_key(engine.id))
            return starting
        transition = begin_start(
            current,
            engine.id,
            spec.spec_hash,
            generation,
            port,
            world.clock(),
            action.kind is StartKind.RESTART,
            action.gpus,
            action.gpu_bytes,
            action.reason if action.waiting else None,
            node,
            spans,
        )
        return world.record(_with_side_ports(transition, side_ports), generation, intent=True)

    def _model_available(
        self, starting: Instance, spec: EngineSpec, kind: RuntimeKind, hub: HubCheck | None
    ) -> bool:
        """Whether the engine can get its model; if not, the start has failed, and said why."""
        world = self._world
        missing = kind.missing_model(spec, world.settings)
        if missing is not None:
            # Not a crash worth retrying: nothing changes until the model is on disk.
            world.record(spawn_failed(starting, missing, world.clock(), InstanceState.FAILED))
            return False
        if hub is not None and hub.answer is not None and not hub.answer.reachable:
            # vLLM and huggingface_hub would retry for over a minute before saying so.
            self._spawn_failed(
                starting,
                spec.restart,
                f"model {spec.model!r} is not on this machine and the Hugging Face hub at"
                f" {hub.endpoint} is not reachable ({hub.answer.detail}); run `sagellm model"
                f" download {spec.model}` where the hub is reachable (or put it in a"
                " models.paths directory), then restart the engine",
            )
            return False
        return True

    def _assignment(self, action: Start) -> GpuAssignment | None:
        """The reserved GPUs and the share of each the engine may use; None without GPUs."""
        if not action.gpus:
            return None
        capacities = [gpu for gpu in self._world.gpu_view.gpus if gpu.index in action.gpus]
        return GpuAssignment(action.gpus, memory_fraction(action.gpu_bytes, capacities))

    def _spawn(
        self,
        engine: DesiredEngine,
        starting: Instance,
        port: int,
        assignment: GpuAssignment | None,
        kind: RuntimeKind,
        launch: Launch | None = None,
    ) -> None:
        """Start the process and watch it; any failure becomes a crash the policy handles.

        `launch` rewrites the argv and environment (an engine spanning nodes)."""
        world, settings, spec = self._world, self._world.settings, engine.spec
        command = "the engine"
        host = world.engine_host(starting.node)
        try:
            side_port = starting.side_ports[0] if starting.side_ports else None
            argv = build_argv(
                spec, settings, engine.id, port, assignment, side_port, host or ENGINE_HOST
            )
            command = argv[0] if argv else command
            env = build_env(spec, settings, engine.id, port, assignment, side_port)
            if launch is not None:
                argv, env = launch(argv, env)
            if starting.node is not None and host is not None:
                self._spawn_remote(engine, starting, argv, env, kind)
                return
            env[RUN_MARKER] = new_run_marker()
            popen = spawn(argv, env, log_path(settings.logs_dir, engine.id))
        except Exception as exc:
            # OSError (no such file, not executable), ValueError (a NUL byte in argv or
            # env), TypeError...: whatever it is, the intent row must not sit in
            # `starting` without a process. It becomes a crash the restart policy handles.
            self._spawn_failed(starting, spec.restart, f"{command}: {describe(exc)}")
            return
        try:
            process = world.watcher.watch_child(engine.id, popen, Markers.of(env))
        except Exception as exc:  # the process exists but cannot be watched
            log.exception("engine=%s pid=%s cannot be watched: killing it", engine.id, popen.pid)
            popen.kill()
            popen.wait()
            self._spawn_failed(starting, spec.restart, f"cannot watch pid {popen.pid}: {exc}")
            return
        world.record(spawned(starting, process.pid, process.create_time, kind.health_path))
        touch_model(settings.home, spec.model)
        self._prober.start(engine.id, process.pid)

    def _spawn_failed(self, starting: Instance, restart: str, reason: str) -> None:
        next_state = InstanceState.FAILED if restart == "never" else InstanceState.BACKOFF
        log.warning("engine=%s cannot start: %s", starting.engine_id, reason)
        self._world.record(spawn_failed(starting, reason, self._world.clock(), next_state))

    def _retire(self, engine_id: str, reason: str) -> None:
        world = self._world
        instance = world.instances[engine_id]
        key = retiring_key(engine_id)
        if key not in world.watcher:
            world.record(retired(instance, "already gone"))
            return
        if world.watcher.is_stopping(key):
            return  # asked on an earlier pass; its exit will be observed
        old = instance.retiring.pid if instance.retiring else "?"
        world.event(engine_id, "stopping", f"previous pid {old}: {reason}")
        world.watcher.stop(key, world.settings.stop_grace_s)

    def _stop(self, engine_id: str, intent: StopIntent, reason: str) -> None:
        world = self._world
        instance = world.instances[engine_id]
        self._prober.cancel(engine_id)
        if engine_id not in world.watcher:
            # Nothing to signal: the process is already gone, so record its end now.
            world.record(begin_stop(instance, intent, reason), intent=True)
            on_exit(world, engine_id, instance.pid, None, None)
            return
        world.record(begin_stop(instance, intent, reason), intent=True)
        world.watcher.stop(engine_id, world.settings.stop_grace_s)
