"""Owns the tests of engines on demand in the planner: sagellmd/reconcile/plan_idle.py,
make_room.py and demand.py, through `plan_actions`, and the idle transitions of instance.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sagellmd.backoff import BackoffPolicy
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.placement import GIB, GpuCapacity, GpuView
from sagellmd.instance import (
    IllegalTransitionError,
    Instance,
    InstanceState,
    StopIntent,
    begin_start,
    begin_stop,
    begin_wake,
    exited,
    fell_asleep,
    made_idle,
)
from sagellmd.reconcile.actions import Idle, Pend, Sleep, Start, Stop, Wait, Wake
from sagellmd.reconcile.demand import Activity, EngineLoad
from sagellmd.reconcile.plan import plan_actions
from sagellmd.reconcile.rollout import judge_change
from sagellmd.spec import parse_engine

NOW = 10_000.0
POLICY = BackoffPolicy(base_s=2.0, max_s=60.0)


def engine(name: str, **fields) -> DesiredEngine:
    return DesiredEngine(name, None, parse_engine({"name": name, "model": "org/m", **fields}))


def instance(desired: DesiredEngine, state: InstanceState, **fields) -> Instance:
    values = dict(
        engine_id=desired.id,
        generation=1,
        spec_hash=desired.spec.spec_hash,
        state=state,
        pid=4242 if state in (InstanceState.READY, InstanceState.STOPPING) else None,
        port=20000,
        started_at=NOW - 100,
        ready_at=NOW - 90 if state is InstanceState.READY else None,
    )
    values.update(fields)
    return Instance(**values)


def one_gpu(**needs_gib: float) -> GpuView:
    return GpuView(
        gpus=(GpuCapacity(0, 80 * GIB, 0),),
        needs={engine_id: int(gib * GIB) for engine_id, gib in needs_gib.items()},
    )


def plan(desired, observed, activity=None, gpus=None, now=NOW):
    return plan_actions(desired, observed, now, POLICY, gpus, activity).actions


def quiet(**loads: EngineLoad) -> Activity:
    return Activity({}, loads)


# -- idle until asked ------------------------------------------------------------


def test_an_on_demand_engine_is_idle_until_demand_starts_it():
    lazy = engine("lazy", start="on-demand")
    assert plan([lazy], {}) == (Idle("lazy", "on demand: starts on the first request"),)
    idle = instance(lazy, InstanceState.IDLE)
    assert plan([lazy], {"lazy": idle}) == ()
    assert plan([lazy], {"lazy": idle}, quiet()) == ()
    (start,) = plan([lazy], {"lazy": idle}, Activity({"lazy": 3}))
    assert isinstance(start, Start) and start.waiting == 3
    assert start.reason == "waking: 3 requests waiting"
    # Demand for a new engine starts it at once.
    (first,) = plan([lazy], {}, Activity({"lazy": 1}))
    assert isinstance(first, Start) and first.waiting == 1


def test_an_always_engine_starts_whatever_the_demand():
    (start,) = plan([engine("up")], {})
    assert isinstance(start, Start) and start.waiting == 0


def test_a_sleeping_engine_is_woken_not_started():
    sleepy = engine("s", start="on-demand", idle_action="sleep")
    asleep = instance(sleepy, InstanceState.IDLE, pid=4242)
    assert asleep.asleep and not asleep.holds_gpus
    assert plan([sleepy], {"s": asleep}) == ()
    assert plan([sleepy], {"s": asleep}, Activity({"s": 2})) == (
        Wake("s", "waking: 2 requests waiting", 2),
    )


def test_an_idle_engine_is_never_restarted_by_the_planner():
    lazy = engine("lazy", start="on-demand")
    idle = instance(lazy, InstanceState.IDLE, failures=3, exited_at=NOW - 1000)
    for now in (NOW, NOW + 10_000):
        assert plan([lazy], {"lazy": idle}, quiet(), now=now) == ()


def test_a_pending_on_demand_engine_goes_back_idle_once_nobody_waits():
    lazy = engine("lazy", start="on-demand")
    pending = instance(lazy, InstanceState.PENDING, message="no room")
    assert plan([lazy], {"lazy": pending}, quiet()) == (
        Idle("lazy", "on demand: no request waits for it any more"),
    )
    (retry,) = plan([lazy], {"lazy": pending}, Activity({"lazy": 1}))
    assert isinstance(retry, Start) and retry.waiting == 1


# -- going idle ------------------------------------------------------------------


def test_a_ready_engine_goes_idle_after_idle_s_without_requests():
    timed = engine("t", idle_s=30)
    ready = instance(timed, InstanceState.READY, ready_at=NOW - 100)
    used = EngineLoad(0, 0, NOW - 10)
    # Its last request was 10 s ago: a timer for the 20 s left.
    assert plan([timed], {"t": ready}, quiet(t=used)) == (
        Wait("t", "idle 30 s after its last request", NOW + 20),
    )
    (stop,) = plan([timed], {"t": ready}, quiet(t=used), now=NOW + 20)
    assert isinstance(stop, Stop) and stop.intent is StopIntent.IDLE
    assert stop.reason.startswith("idle: no request for 30 s (since ")


def test_nothing_goes_idle_while_busy_or_without_a_report():
    timed = engine("t", idle_s=30)
    ready = instance(timed, InstanceState.READY, ready_at=NOW - 1000)
    assert plan([timed], {"t": ready}) == ()
    assert plan([timed], {"t": ready}, quiet(t=EngineLoad(1, 0, NOW - 500))) == ()
    assert plan([timed], {"t": ready}, quiet(t=EngineLoad(0, 2, NOW - 500))) == ()
    # An always engine without idle_s never goes idle.
    assert plan([engine("up")], {"up": instance(engine("up"), InstanceState.READY)}, quiet()) == ()


def test_idle_action_sleep_plans_a_sleep():
    sleepy = engine("s", idle_s=5, idle_action="sleep")
    (sleep,) = plan([sleepy], {"s": instance(sleepy, InstanceState.READY)}, quiet())
    assert isinstance(sleep, Sleep) and sleep.reason.startswith("idle: no request for 5 s")


# -- making room -----------------------------------------------------------------


def two_on_one_gpu(a_load: EngineLoad, **a_fields):
    a = engine("a", start="on-demand", gpu_memory_gb=50, **a_fields)
    b = engine("b", start="on-demand", gpu_memory_gb=50)
    observed = {
        "a": instance(a, InstanceState.READY, gpus=(0,), gpu_bytes=50 * GIB),
        "b": instance(b, InstanceState.IDLE),
    }
    activity = Activity({"b": 1}, {"a": a_load})
    return plan([a, b], observed, activity, one_gpu(a=50, b=50))


def test_demand_that_does_not_fit_evicts_an_idle_engine_first():
    actions = two_on_one_gpu(EngineLoad(0, 0, NOW - 5))
    assert Stop("a", "idle: evicted to make room for b", StopIntent.IDLE) in actions
    assert Pend("b", "making room: evicting a") in actions


def test_a_sleeper_is_evicted_by_putting_it_to_sleep():
    actions = two_on_one_gpu(EngineLoad(0, 0, NOW - 5), idle_action="sleep")
    assert Sleep("a", "idle: evicted to make room for b") in actions


def test_a_busy_engine_is_never_evicted():
    actions = two_on_one_gpu(EngineLoad(1, 0, NOW))
    assert not any(isinstance(action, Stop | Sleep) for action in actions)
    (pend,) = [action for action in actions if isinstance(action, Pend)]
    assert pend.engine_id == "b"
    assert pend.reason.endswith("only busy or always-on engines hold the memory: a (busy)")


def test_an_always_engine_without_idle_s_is_never_evicted():
    up = engine("up", gpu_memory_gb=50)
    b = engine("b", start="on-demand", gpu_memory_gb=50)
    observed = {
        "up": instance(up, InstanceState.READY, gpus=(0,), gpu_bytes=50 * GIB),
        "b": instance(b, InstanceState.IDLE),
    }
    actions = plan([up, b], observed, Activity({"b": 1}), one_gpu(up=50, b=50))
    (pend,) = actions
    assert isinstance(pend, Pend) and pend.engine_id == "b"
    assert pend.reason.endswith(
        "only busy or always-on engines hold the memory: up (not idle-able)"
    )


def test_a_start_waits_while_an_evicted_engine_still_holds_its_memory():
    a = engine("a", start="on-demand", gpu_memory_gb=50)
    b = engine("b", start="on-demand", gpu_memory_gb=50)
    stopping = instance(
        a, InstanceState.STOPPING, gpus=(0,), gpu_bytes=50 * GIB, stop_intent=StopIntent.IDLE
    )
    observed = {"a": stopping, "b": instance(b, InstanceState.IDLE)}
    actions = plan([a, b], observed, Activity({"b": 1}), one_gpu(a=50, b=50))
    assert actions == (Pend("b", "making room: waiting for a to release GPU memory"),)


# -- transitions and verdicts ----------------------------------------------------


def test_idle_stop_exit_and_sleep_transitions():
    timed = engine("t", idle_s=5)
    ready = instance(timed, InstanceState.READY, gpus=(0,), gpu_bytes=GIB)
    stopping = begin_stop(ready, StopIntent.IDLE, "idle: no request for 5 s").instance
    assert stopping.holds_gpus  # kept until the process is gone
    gone = exited(stopping, 0, None, NOW, "always", 600, 1, 60).instance
    assert (gone.state, gone.pid, gone.holds_gpus) == (InstanceState.IDLE, None, False)
    assert gone.message == "idle: no request for 5 s"
    falling = begin_stop(ready, StopIntent.SLEEP, "idle: asleep").instance
    asleep = fell_asleep(falling, "idle: asleep").instance
    assert asleep.asleep and asleep.pid == 4242 and not asleep.holds_gpus
    with pytest.raises(IllegalTransitionError):
        begin_start(asleep, "t", asleep.spec_hash, 1, 20001, NOW, False)
    woken = begin_wake(asleep, NOW, 2).instance
    assert (woken.state, woken.pid, woken.gpus, woken.holds_gpus) == (
        InstanceState.STARTING,
        4242,
        (0,),
        True,
    )
    # A sleeping process that dies leaves the engine idle, with no process.
    ended = exited(asleep, None, 9, NOW, "always", 600, 1, 60).instance
    assert (ended.state, ended.pid) == (InstanceState.IDLE, None)


def test_a_sleeping_process_keeps_its_spec():
    sleepy = engine("s", idle_action="sleep", idle_s=5)
    asleep = instance(sleepy, InstanceState.IDLE, pid=4242)
    with pytest.raises(IllegalTransitionError):
        made_idle(asleep, "s", "otherhash", 1, "x")
    changed = replace(sleepy, spec=replace(sleepy.spec, model="org/other"))
    (stop,) = plan([changed], {"s": asleep}, quiet())
    assert isinstance(stop, Stop) and stop.intent is StopIntent.IDLE


def test_idle_is_healthy_for_a_rollout():
    lazy = engine("lazy", start="on-demand")
    idle = instance(lazy, InstanceState.IDLE, message="on demand: starts on the first request")
    verdict = judge_change("lazy", lazy.spec.spec_hash, NOW, 900, idle, NOW)
    assert verdict.healthy is True


def test_activity_reads_a_report():
    activity = Activity.from_report(
        {
            "engines": {"a": {"inflight": 1, "queued": 0, "last_request_at": NOW}},
            "demand": {"b": 2, "c": 0},
        }
    )
    assert activity.demand == {"b": 2}
    assert activity.load("a").busy and not activity.load("zzz").busy
