"""The planner: a pure diff of desired against observed state into actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sagellmd.backoff import BackoffPolicy, backoff_delay
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.placement import GpuView
from sagellmd.instance import LIVE_STATES, Instance, InstanceState, StopIntent
from sagellmd.reconcile.actions import (
    Action,
    Forget,
    Plan,
    Replace,
    Retire,
    Start,
    StartKind,
    Stop,
    Wait,
)
from sagellmd.reconcile.demand import Activity
from sagellmd.reconcile.gpus_for_starts import place_starts
from sagellmd.reconcile.make_room import eviction_candidates
from sagellmd.reconcile.plan_idle import (
    first_plan,
    plan_idle,
    plan_pending_on_demand,
    plan_ready_idle,
    waiting_for,
)


def _restart_requested(engine: DesiredEngine, instance: Instance) -> bool:
    requested = engine.restart_requested_at
    return requested is not None and requested > (instance.started_at or 0.0)


def _plan_engine(
    engine: DesiredEngine,
    instance: Instance | None,
    now: float,
    backoff: BackoffPolicy,
    activity: Activity | None,
) -> Action | None:
    spec = engine.spec
    if instance is None:
        return first_plan(engine, activity)
    changed = instance.spec_hash != spec.spec_hash
    state = instance.state
    if state is InstanceState.STOPPING:
        return None
    if state is InstanceState.IDLE:
        # Idle engines are never restarted by the planner itself: only demand starts them.
        return plan_idle(engine, instance, activity)
    if state is InstanceState.PENDING:
        if spec.start == "on-demand":
            return plan_pending_on_demand(engine, instance, activity)
        return Start(engine, f"retry: {instance.message}", waiting=waiting_for(engine, activity))
    if state in (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY):
        if changed:
            if (
                state is InstanceState.READY
                and instance.retiring is None
                and (spec.port is None or spec.port != instance.port)
            ):
                # Start-then-stop keeps the engine serving; placement falls back to
                # stop-then-start when the GPUs cannot hold both at once.
                return Start(
                    engine,
                    "spec changed: new process first, then stop the old",
                    kind=StartKind.SURGE,
                )
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
        if state is InstanceState.READY:
            return plan_ready_idle(engine, instance, activity, now)
        return None
    if changed:
        return Start(engine, "spec changed")
    if state is InstanceState.BACKOFF:
        exited_at = now if instance.exited_at is None else instance.exited_at
        due = exited_at + backoff_delay(instance.failures, backoff.base_s, backoff.max_s)
        if now >= due:
            return Start(engine, f"crash #{instance.failures} in a row", kind=StartKind.RESTART)
        return Wait(engine.id, f"backoff after crash #{instance.failures}", due)
    if _restart_requested(engine, instance):
        return Start(engine, "restart requested")
    if state is InstanceState.STOPPED and instance.stop_intent is StopIntent.DELIBERATE:
        # Stopped because it was removed or replaced, not by its restart policy:
        # it is desired again (e.g. unset then set before the old process exited).
        if spec.start == "on-demand":
            return first_plan(engine, activity)
        return Start(engine, "desired again")
    return None


def plan_actions(
    desired: Sequence[DesiredEngine],
    observed: Mapping[str, Instance],
    now: float,
    backoff: BackoffPolicy = BackoffPolicy(),
    gpus: GpuView | None = None,
    activity: Activity | None = None,
) -> Plan:
    """What should happen now to make `observed` match `desired`; no I/O.

    With `gpus`, starts of engines that want GPUs are placed (or made to wait);
    without it, placement is left out (engines start with no GPU accounting).
    `activity` is the gateway's last fresh report (None: none): demand starts idle
    engines (evicting idle ones when there is no room), and idleness stops or sleeps them.
    """
    actions: list[Action] = []
    wanted = {engine.id: engine for engine in desired}
    for engine_id in sorted(set(wanted) | set(observed)):
        instance = observed.get(engine_id)
        engine = wanted.get(engine_id)
        if engine is None:
            assert instance is not None
            if instance.state in LIVE_STATES or instance.asleep:
                actions.append(Stop(engine_id, "no longer desired"))
            elif instance.state is not InstanceState.STOPPING and instance.retiring is None:
                actions.append(Forget(engine_id, "no longer desired"))
            if instance.retiring is not None:
                actions.append(Retire(engine_id, "no longer desired"))
            continue
        action = _plan_engine(engine, instance, now, backoff, activity)
        if action is not None:
            actions.append(action)
        if (
            instance is not None
            and instance.retiring is not None
            and instance.state is InstanceState.READY
            and instance.spec_hash == engine.spec.spec_hash
        ):
            actions.append(Retire(engine_id, "its replacement is ready"))
    if gpus is not None:
        candidates = eviction_candidates(actions, desired, observed, activity)
        actions = place_starts(actions, observed, gpus, candidates)
    return Plan(tuple(actions))
