"""Owns the tests of sagellmd/instance.py: the transitions of an engine's process slot."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sagellmd.instance import (
    ALLOWED,
    Instance,
    InstanceState,
    StopIntent,
    became_ready,
    became_unhealthy,
    begin_start,
    begin_stop,
    begin_surge,
    describe_exit,
    exited,
    made_pending,
    retired,
    spawn_failed,
    spawned,
)
from sagellmd.instance import IllegalTransitionError as Illegal

T0 = 1_000.0
BASE_S, MAX_S, RESET_S = 2.0, 60.0, 600.0


def start(now=T0, spec_hash="h1", current=None, counts_as_restart=False) -> Instance:
    return begin_start(current, "chat", spec_hash, 3, 20001, now, counts_as_restart).instance


def ready(now=T0, **fields) -> Instance:
    running = spawned(start(now), 4242, now + 0.01).instance
    return replace(became_ready(running, now + 5).instance, **fields)


def exit_of(current, code=1, signal=None, now=T0 + 100, policy="always", reset_after_s=RESET_S):
    return exited(current, code, signal, now, policy, reset_after_s, BASE_S, MAX_S)


# -- starting ------------------------------------------------------------------


def test_begin_start_from_nothing():
    transition = begin_start(None, "chat", "h1", 3, 20001, T0, False)
    instance = transition.instance
    assert instance.state is InstanceState.STARTING
    assert (instance.engine_id, instance.spec_hash, instance.generation) == ("chat", "h1", 3)
    assert (instance.port, instance.started_at, instance.pid) == (20001, T0, None)
    assert (instance.restarts, instance.failures) == (0, 0)
    assert transition.event_type == "starting"
    assert transition.message == "port 20001"


def test_spawned_records_the_process():
    transition = spawned(start(), 4242, 123.5)
    assert (transition.instance.pid, transition.instance.create_time) == (4242, 123.5)
    assert transition.instance.state is InstanceState.STARTING
    assert transition.event_type == "started"
    assert transition.message == "pid 4242 on port 20001"


def test_became_ready_reports_how_long_it_took():
    transition = became_ready(start(T0), T0 + 12.34)
    assert transition.instance.state is InstanceState.READY
    assert transition.instance.ready_at == T0 + 12.34
    assert transition.message == "healthy after 12.3s"


def test_unhealthy_then_ready_again():
    sick = became_unhealthy(ready(), "health check failed 3 times").instance
    assert sick.state is InstanceState.UNHEALTHY
    assert sick.message == "health check failed 3 times"
    back = became_ready(sick, T0 + 50)
    assert back.instance.state is InstanceState.READY
    assert back.message == "health check passes again"


def test_restart_after_backoff_keeps_the_crash_count():
    crashed = replace(exit_of(ready(), code=1).instance, failures=3, restarts=2)
    again = begin_start(crashed, "chat", "h1", 4, 20001, T0 + 200, True)
    assert again.instance.state is InstanceState.STARTING
    assert (again.instance.failures, again.instance.restarts) == (3, 3)
    assert again.instance.ready_at is None
    assert again.instance.last_exit_code == 1
    assert again.event_type == "restarting"
    assert again.message == "port 20001, restart #3"


def test_start_with_a_new_spec_resets_the_counters():
    crashed = replace(exit_of(ready()).instance, failures=3, restarts=2)
    fresh = begin_start(crashed, "chat", "h2", 4, 20001, T0 + 200, False).instance
    assert (fresh.spec_hash, fresh.failures, fresh.restarts) == ("h2", 0, 0)
    assert fresh.last_exit_code is None and fresh.exited_at is None


def test_spawn_failed_counts_as_a_failure():
    transition = spawn_failed(start(), "No such file", T0 + 1, InstanceState.BACKOFF)
    assert transition.instance.state is InstanceState.BACKOFF
    assert transition.instance.failures == 1
    assert transition.event_type == "exited"
    failed = spawn_failed(start(), "No such file", T0 + 1, InstanceState.FAILED)
    assert failed.event_type == "failed"
    assert failed.instance.message == "cannot start: No such file"


def test_made_pending_from_nothing_and_after_a_stop():
    pending = made_pending(None, "chat", "h1", 2, "no free port").instance
    assert (pending.state, pending.message, pending.generation) == (
        InstanceState.PENDING,
        "no free port",
        2,
    )
    stopped = exit_of(begin_stop(ready(), StopIntent.DELIBERATE, "bye").instance).instance
    again = made_pending(stopped, "chat", "h2", 5, "port 9000 is held").instance
    assert (again.state, again.spec_hash, again.pid) == (InstanceState.PENDING, "h2", None)


# -- stopping and exits --------------------------------------------------------


def test_begin_stop_records_the_intent():
    transition = begin_stop(ready(), StopIntent.FAILURE, "too slow")
    assert transition.instance.state is InstanceState.STOPPING
    assert transition.instance.stop_intent is StopIntent.FAILURE
    assert transition.instance.pid == 4242
    assert (transition.event_type, transition.message) == ("stopping", "too slow")


@pytest.mark.parametrize("policy", ["always", "on-failure", "never"])
@pytest.mark.parametrize(("code", "signal"), [(0, None), (1, None), (None, 15), (None, None)])
def test_exit_after_a_deliberate_stop_is_stopped(policy, code, signal):
    stopping = begin_stop(replace(ready(), failures=2), StopIntent.DELIBERATE, "no longer desired")
    transition = exit_of(stopping.instance, code, signal, policy=policy)
    instance = transition.instance
    assert instance.state is InstanceState.STOPPED
    assert instance.message == "stopped"
    assert instance.failures == 2
    assert instance.stop_intent is StopIntent.DELIBERATE  # kept: a deliberate stop
    assert (instance.pid, instance.create_time) == (None, None)
    assert (instance.last_exit_code, instance.last_exit_signal) == (code, signal)
    assert instance.exited_at == T0 + 100
    assert transition.event_type == "stopped"


# (policy, exit code, signal, stop intent) -> the state after the exit
EXITS = [
    ("always", 1, None, None, InstanceState.BACKOFF),
    ("always", 0, None, None, InstanceState.BACKOFF),
    ("always", None, 9, None, InstanceState.BACKOFF),
    ("always", 0, None, StopIntent.FAILURE, InstanceState.BACKOFF),
    ("on-failure", 1, None, None, InstanceState.BACKOFF),
    ("on-failure", None, 9, None, InstanceState.BACKOFF),
    ("on-failure", None, None, None, InstanceState.BACKOFF),
    ("on-failure", 0, None, None, InstanceState.STOPPED),
    ("on-failure", 0, None, StopIntent.FAILURE, InstanceState.BACKOFF),
    ("on-failure", None, 15, StopIntent.FAILURE, InstanceState.BACKOFF),
    ("never", 1, None, None, InstanceState.FAILED),
    ("never", None, 9, None, InstanceState.FAILED),
    ("never", 0, None, None, InstanceState.STOPPED),
    ("never", 0, None, StopIntent.FAILURE, InstanceState.FAILED),
    ("never", None, 15, StopIntent.FAILURE, InstanceState.FAILED),
]


@pytest.mark.parametrize(("policy", "code", "signal", "intent", "expected"), EXITS)
def test_exit_by_restart_policy_and_intent(policy, code, signal, intent, expected):
    running = replace(ready(), failures=1)
    current = begin_stop(running, intent, "health check failed").instance if intent else running
    transition = exit_of(current, code, signal, policy=policy)
    instance = transition.instance
    assert instance.state is expected
    assert instance.failures == 2
    assert instance.stop_intent is None and instance.pid is None
    assert transition.event_type == "exited"
    if expected is InstanceState.BACKOFF:
        assert instance.message.endswith("next start in 2s")
    else:
        assert instance.message.endswith(f"not restarted (restart: {policy})")
    if intent is StopIntent.FAILURE:
        assert instance.message.startswith("health check failed;")
        assert "(health check failed)" in transition.message


@pytest.mark.parametrize("state", [InstanceState.STARTING, InstanceState.UNHEALTHY])
def test_crash_while_starting_or_unhealthy_backs_off(state):
    if state is InstanceState.STARTING:
        current = start()
    else:
        current = became_unhealthy(ready(), "x").instance
    assert exit_of(current, 1).instance.state is InstanceState.BACKOFF


def test_failures_count_up_across_crashes():
    instance = ready()
    delays = []
    for expected in range(1, 6):
        instance = exit_of(instance, 1, now=T0 + 10 * expected).instance
        assert instance.failures == expected
        delays.append(instance.message.split("; ")[-1])
        instance = begin_start(
            instance, "chat", "h1", 3, 20001, T0 + 10 * expected + 1, True
        ).instance
        instance = became_ready(instance, T0 + 10 * expected + 2).instance
    assert delays == [
        "restarting now",
        "next start in 2s",
        "next start in 4s",
        "next start in 8s",
        "next start in 16s",
    ]


def test_failures_reset_after_staying_ready_long_enough():
    long_lived = replace(ready(), failures=5, ready_at=T0)
    after = exit_of(long_lived, 1, now=T0 + RESET_S).instance
    assert after.failures == 1
    assert after.message.endswith("restarting now")


def test_failures_keep_counting_just_before_the_reset():
    short_lived = replace(ready(), failures=5, ready_at=T0)
    after = exit_of(short_lived, 1, now=T0 + RESET_S - 0.001).instance
    assert after.failures == 6


def test_failures_keep_counting_when_never_ready():
    after = exit_of(replace(start(), failures=4), 1, now=T0 + 10 * RESET_S).instance
    assert after.failures == 5


def test_exit_message_names_the_cause():
    crashed = exit_of(ready(), None, 9)
    assert crashed.message == "signal 9; restarting now"
    assert crashed.instance.message == "signal 9; restarting now"


@pytest.mark.parametrize(
    ("code", "signal", "text"),
    [
        (0, None, "exit code 0"),
        (3, None, "exit code 3"),
        (None, 9, "signal 9"),
        (1, 9, "signal 9"),
        (None, None, "exit status unknown (process was not our child)"),
    ],
)
def test_describe_exit(code, signal, text):
    assert describe_exit(code, signal) == text


# -- illegal transitions -------------------------------------------------------


def stopped() -> Instance:
    return exit_of(begin_stop(ready(), StopIntent.DELIBERATE, "bye").instance).instance


def backoff() -> Instance:
    return exit_of(ready(), 1).instance


def surged() -> Instance:
    return begin_surge(ready(), "h2", 4, 20002, T0 + 10).instance


ILLEGAL = [
    ("ready-from-stopped", lambda: became_ready(stopped(), T0)),
    ("ready-from-backoff", lambda: became_ready(backoff(), T0)),
    ("unhealthy-from-stopped", lambda: became_unhealthy(stopped(), "x")),
    ("stop-a-stopped-instance", lambda: begin_stop(stopped(), StopIntent.DELIBERATE, "x")),
    ("stop-a-backoff-instance", lambda: begin_stop(backoff(), StopIntent.DELIBERATE, "x")),
    (
        "stop-twice",
        lambda: begin_stop(
            begin_stop(ready(), StopIntent.DELIBERATE, "x").instance, StopIntent.DELIBERATE, "x"
        ),
    ),
    ("start-a-ready-instance", lambda: start(current=ready())),
    (
        "start-a-stopping-instance",
        lambda: start(current=begin_stop(ready(), StopIntent.DELIBERATE, "x").instance),
    ),
    ("exit-of-a-backoff-instance", lambda: exit_of(backoff(), 1)),
    ("exit-of-a-stopped-instance", lambda: exit_of(stopped(), 1, policy="never")),
    ("pending-from-ready", lambda: made_pending(ready(), "chat", "h1", 1, "x")),
    (
        "spawn-failed-of-a-stopped-instance",
        lambda: spawn_failed(stopped(), "x", T0, InstanceState.BACKOFF),
    ),
    ("spawned-of-a-stopped-instance", lambda: spawned(stopped(), 4242, T0)),
    ("spawned-of-a-ready-instance", lambda: spawned(ready(), 4243, T0)),
    ("spawned-twice", lambda: spawned(spawned(start(), 4242, T0).instance, 4243, T0)),
    ("surge-a-starting-instance", lambda: begin_surge(start(), "h2", 4, 20002, T0)),
    ("surge-a-backoff-instance", lambda: begin_surge(backoff(), "h2", 4, 20002, T0)),
    ("surge-a-surging-instance", lambda: begin_surge(surged(), "h3", 5, 20003, T0)),
    ("retired-without-a-retiring-process", lambda: retired(ready(), "gone")),
    ("retired-twice", lambda: retired(retired(surged(), "gone").instance, "gone")),
]


@pytest.mark.parametrize("transition", [pytest.param(fn, id=name) for name, fn in ILLEGAL])
def test_illegal_transitions_raise(transition):
    with pytest.raises(Illegal, match="is not allowed"):
        transition()


def test_illegal_transition_message_names_engine_and_states():
    with pytest.raises(Illegal) as caught:
        became_ready(stopped(), T0)
    assert str(caught.value) == "chat: stopped -> ready is not allowed"


def test_every_state_has_a_rule():
    assert set(ALLOWED) == {None, *InstanceState}
    for state, targets in ALLOWED.items():
        # Pending and idle record a new reason (idle: a new spec, its sleeping process's end).
        assert state not in targets or state in (InstanceState.PENDING, InstanceState.IDLE)


def test_surge_starts_beside_the_ready_process():
    transition = begin_surge(ready(), "h2", 4, 20002, T0 + 10)
    instance = transition.instance
    assert (instance.state, instance.spec_hash, instance.port) == (
        InstanceState.STARTING,
        "h2",
        20002,
    )
    assert instance.retiring is not None and instance.retiring.pid == 4242


@pytest.mark.parametrize("state", list(InstanceState))
def test_retired_keeps_the_state_whatever_it_is(state):
    current = replace(surged(), state=state)
    transition = retired(current, "signal 15")
    assert transition.instance.state is state
    assert transition.instance.retiring is None
    assert transition.message == "previous pid 4242: signal 15"


def test_side_change_message_says_what_it_needs():
    with pytest.raises(Illegal) as caught:
        retired(ready(), "gone")
    assert str(caught.value) == (
        "chat: ready -> ready is not allowed (retire the previous process: needs one)"
    )


def test_a_stop_intent_stored_before_the_rename_still_reads():
    assert StopIntent("remove") is StopIntent.DELIBERATE
    assert StopIntent("deliberate") is StopIntent.DELIBERATE
    with pytest.raises(ValueError):
        StopIntent("sideways")
