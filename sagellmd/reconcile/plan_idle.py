"""The planner's part for engines on demand: when an idle engine starts or wakes, and when a
ready one goes idle (issue 14). Pure, like plan.py."""

from __future__ import annotations

from sagellmd.desired import DesiredEngine
from sagellmd.instance import Instance, StopIntent
from sagellmd.reconcile.actions import Action, Idle, Sleep, Start, Stop, Wait, Wake
from sagellmd.reconcile.demand import Activity, clock_time, last_used

ON_DEMAND = "on demand: starts on the first request"


def waiting_for(engine: DesiredEngine, activity: Activity | None) -> int:
    return activity.waiting(engine.id) if activity is not None else 0


def waking(waiting: int) -> str:
    return f"waking: {waiting} requests waiting"


def first_plan(engine: DesiredEngine, activity: Activity | None) -> Action:
    """A new engine: started, unless it is on demand and nobody asks for it yet."""
    waiting = waiting_for(engine, activity)
    if engine.spec.start != "on-demand":
        return Start(engine, "new engine")
    if waiting:
        return Start(engine, waking(waiting), waiting=waiting)
    return Idle(engine.id, ON_DEMAND)


def plan_idle(
    engine: DesiredEngine, instance: Instance, activity: Activity | None
) -> Action | None:
    """An idle engine starts (or wakes) on demand, and only then; an `always` engine without
    idle_s (it was on demand, or had idle_s, before its spec changed) starts at once."""
    spec = engine.spec
    waiting = waiting_for(engine, activity)
    stays_up = spec.start == "always" and spec.idle_s is None
    if instance.asleep:
        if instance.spec_hash != spec.spec_hash:
            return Stop(engine.id, "idle: its spec changed while asleep", StopIntent.IDLE)
        if waiting:
            return Wake(engine.id, waking(waiting), waiting)
        return Wake(engine.id, "start: always", 0) if stays_up else None
    if instance.spec_hash != spec.spec_hash:
        return Idle(engine.id, instance.message or ON_DEMAND)  # record the spec it will run
    if waiting:
        return Start(engine, waking(waiting), waiting=waiting)
    return Start(engine, "start: always") if stays_up else None


def plan_pending_on_demand(
    engine: DesiredEngine, instance: Instance, activity: Activity | None
) -> Action:
    """A pending on-demand engine retries while requests wait for it, else goes back idle."""
    waiting = waiting_for(engine, activity)
    if waiting:
        return Start(engine, f"retry: {instance.message}", waiting=waiting)
    return Idle(engine.id, "on demand: no request waits for it any more")


def plan_ready_idle(
    engine: DesiredEngine, instance: Instance, activity: Activity | None, now: float
) -> Action | None:
    """A ready engine with idle_s goes idle once nothing was in flight or queued for idle_s;
    without a fresh gateway report nothing does."""
    spec = engine.spec
    if spec.idle_s is None or activity is None or instance.retiring is not None:
        return None
    load = activity.load(engine.id)
    if load.busy:
        return None  # the next report (when it is done) wakes the loop
    due = last_used(instance, load) + spec.idle_s
    if now < due:
        return Wait(engine.id, f"idle {spec.idle_s:g} s after its last request", due)
    reason = f"idle: no request for {spec.idle_s:g} s (since {clock_time(now)})"
    if spec.idle_action == "sleep":
        return Sleep(engine.id, reason)
    return Stop(engine.id, reason, StopIntent.IDLE)
