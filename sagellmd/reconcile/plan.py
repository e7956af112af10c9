"""The planner: a pure diff of desired against observed state into actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sagellmd.instance import Instance, InstanceState, StopIntent
from sagellmd.reconcile.backoff import backoff_delay
from sagellmd.spec import EngineSpec


@dataclass(frozen=True)
class DesiredEngine:
    """One engine of the desired state, as the planner sees it."""

    id: str
    preset: str | None
    spec: EngineSpec
    restart_requested_at: float | None = None


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    max_s: float = 300.0


@dataclass(frozen=True)
class Start:
    """Spawn the engine's process (first start, or after a stop or a replace)."""

    engine_id: str
    reason: str
    action: str = "start"


@dataclass(frozen=True)
class Restart:
    """Spawn the engine again after a crash, its backoff delay having passed."""

    engine_id: str
    reason: str
    action: str = "restart"


@dataclass(frozen=True)
class Stop:
    """Stop the engine's process group; `intent` says what its exit will mean."""

    engine_id: str
    reason: str
    intent: StopIntent = StopIntent.REMOVE
    action: str = "stop"


@dataclass(frozen=True)
class Replace:
    """The spec changed: stop the old process; a later pass starts the new one."""

    engine_id: str
    reason: str
    action: str = "replace"


@dataclass(frozen=True)
class Forget:
    """Drop the record of an engine that is no longer desired and has no process."""

    engine_id: str
    reason: str
    action: str = "forget"


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `until` (a startup deadline or a backoff delay)."""

    engine_id: str
    reason: str
    until: float
    action: str = "wait"


Action = Start | Restart | Stop | Replace | Forget | Wait


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that do something now (everything but waits)."""
        return tuple(action for action in self.actions if not isinstance(action, Wait))

    def to_list(self) -> list[dict[str, object]]:
        # "engine" is the key of the API contract (docs/api.md).
        return [
            {
                ("engine" if key == "engine_id" else key): (
                    value.value if isinstance(value, StopIntent) else value
                )
                for key, value in vars(action).items()
            }
            for action in self.actions
        ]


def _restart_requested(engine: DesiredEngine, instance: Instance) -> bool:
    requested = engine.restart_requested_at
    return requested is not None and requested > (instance.started_at or 0.0)


def _plan_engine(
    engine: DesiredEngine, instance: Instance | None, now: float, backoff: BackoffPolicy
) -> Action | None:
    spec = engine.spec
    if instance is None:
        return Start(engine.id, "new engine")
    changed = instance.spec_hash != spec.spec_hash
    state = instance.state
    if state is InstanceState.STOPPING:
        return None
    if state is InstanceState.PENDING:
        return Start(engine.id, f"retry: {instance.message}")
    if state in (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY):
        if changed:
            return Replace(engine.id, "spec changed")
        if _restart_requested(engine, instance):
            return Stop(engine.id, "restart requested")
        if state is InstanceState.UNHEALTHY:
            return Stop(engine.id, instance.message or "unhealthy", StopIntent.FAILURE)
        if state is InstanceState.STARTING:
            started_at = now if instance.started_at is None else instance.started_at
            deadline = started_at + spec.startup_timeout_s
            if now >= deadline:
                return Stop(
                    engine.id,
                    f"not healthy within startup_timeout_s={spec.startup_timeout_s:g}",
                    StopIntent.FAILURE,
                )
            return Wait(engine.id, "waiting for /health", deadline)
        return None
    if changed:
        return Start(engine.id, "spec changed")
    if state is InstanceState.BACKOFF:
        exited_at = now if instance.exited_at is None else instance.exited_at
        due = exited_at + backoff_delay(instance.failures, backoff.base_s, backoff.max_s)
        if now >= due:
            return Restart(engine.id, f"crash #{instance.failures} in a row")
        return Wait(engine.id, f"backoff after crash #{instance.failures}", due)
    if _restart_requested(engine, instance):
        return Start(engine.id, "restart requested")
    if state is InstanceState.STOPPED and instance.stop_intent is StopIntent.REMOVE:
        # Stopped because it was removed or replaced, not by its restart policy:
        # it is desired again (e.g. unset then set before the old process exited).
        return Start(engine.id, "desired again")
    return None


def plan_actions(
    desired: Sequence[DesiredEngine],
    observed: Mapping[str, Instance],
    now: float,
    backoff: BackoffPolicy = BackoffPolicy(),
) -> Plan:
    """What should happen now to make `observed` match `desired`; no I/O."""
    actions: list[Action] = []
    wanted = {engine.id: engine for engine in desired}
    for engine_id in sorted(set(wanted) | set(observed)):
        instance = observed.get(engine_id)
        engine = wanted.get(engine_id)
        if engine is None:
            assert instance is not None
            if instance.state in (
                InstanceState.STARTING,
                InstanceState.READY,
                InstanceState.UNHEALTHY,
            ):
                actions.append(Stop(engine_id, "no longer desired"))
            elif instance.state is not InstanceState.STOPPING:
                actions.append(Forget(engine_id, "no longer desired"))
            continue
        action = _plan_engine(engine, instance, now, backoff)
        if action is not None:
            actions.append(action)
    return Plan(tuple(actions))
