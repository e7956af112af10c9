"""The rollout judge: healthy, failed (and why), or still rolling out."""

from __future__ import annotations

from dataclasses import replace

from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import DesiredEngine
from sagellmd.reconcile.rollout import CRASH_LIMIT, changed_engines, judge_rollout
from sagellmd.spec import parse_engine

T0 = 1_000.0


def engine(name: str, model: str = "org/m-1B", **fields) -> DesiredEngine:
    return DesiredEngine(name, None, parse_engine({"name": name, "model": model, **fields}))


def running(
    desired: DesiredEngine, state: InstanceState = InstanceState.READY, **fields
) -> Instance:
    values = dict(
        engine_id=desired.id,
        generation=1,
        spec_hash=desired.spec.spec_hash,
        state=state,
        pid=100,
        port=20000,
        started_at=T0,
    )
    values.update(fields)
    return Instance(**values)


def test_changed_engines_are_new_or_have_a_new_spec():
    a, b, c = engine("a"), engine("b"), engine("c", model="org/new-1B")
    before = {"a": a.spec.spec_hash, "c": engine("c").spec.spec_hash}
    assert changed_engines([a, b, c], before) == ["b", "c"]


def test_healthy_when_every_engine_runs_its_spec_and_is_ready():
    a, b = engine("a"), engine("b")
    verdict = judge_rollout(T0, [a, b], {}, {"a": running(a), "b": running(b)}, T0 + 1)
    assert verdict.healthy is True and verdict.reason == "all engines ready"


def test_an_empty_desired_state_is_healthy():
    assert judge_rollout(T0, [], {}, {}, T0).healthy is True


def test_ready_on_the_old_spec_is_not_healthy_yet():
    old, new = engine("a"), engine("a", model="org/new-1B")
    verdict = judge_rollout(T0, [new], {"a": old.spec.spec_hash}, {"a": running(old)}, T0 + 1)
    assert verdict.healthy is None
    assert verdict.deadline == T0 + new.spec.startup_timeout_s


def test_a_changed_engine_not_ready_by_its_startup_timeout_fails_the_rollout():
    a = engine("a", startup_timeout_s=30)
    starting = running(a, InstanceState.STARTING)
    assert judge_rollout(T0, [a], {}, {"a": starting}, T0 + 29.9).healthy is None
    verdict = judge_rollout(T0, [a], {}, {"a": starting}, T0 + 30)
    assert verdict.healthy is False and verdict.engine == "a"
    assert verdict.reason == "a not ready within startup_timeout_s=30 (starting)"


def test_a_changed_engine_that_never_started_fails_by_its_deadline():
    a = engine("a", startup_timeout_s=5)
    verdict = judge_rollout(T0, [a], {}, {}, T0 + 6)
    assert verdict.healthy is False and "(not started)" in verdict.reason


def test_a_changed_engine_that_crash_loops_fails_the_rollout():
    a = engine("a")
    looping = running(a, InstanceState.BACKOFF, failures=CRASH_LIMIT, message="signal 9")
    verdict = judge_rollout(T0, [a], {}, {"a": looping}, T0 + 1)
    assert verdict.healthy is False
    assert verdict.reason == f"a exited {CRASH_LIMIT} times: signal 9"
    once = replace(looping, failures=CRASH_LIMIT - 1)
    assert judge_rollout(T0, [a], {}, {"a": once}, T0 + 1).healthy is None


def test_a_failed_changed_engine_fails_the_rollout_at_once():
    a = engine("a", restart="never")
    failed = running(a, InstanceState.FAILED, message="exit code 1")
    verdict = judge_rollout(T0, [a], {}, {"a": failed}, T0 + 1)
    assert verdict.healthy is False and verdict.reason == "a failed: exit code 1"


def test_an_untouched_engine_crashing_does_not_fail_the_rollout():
    stable, changed = engine("stable"), engine("new")
    observed = {
        "stable": running(stable, InstanceState.BACKOFF, failures=5),
        "new": running(changed, InstanceState.STARTING),
    }
    before = {"stable": stable.spec.spec_hash}
    verdict = judge_rollout(T0, [stable, changed], before, observed, T0 + 1)
    assert verdict.healthy is None


def test_the_earliest_deadline_is_the_next_look():
    fast, slow = engine("fast", startup_timeout_s=10), engine("slow", startup_timeout_s=60)
    observed = {
        "fast": running(fast, InstanceState.STARTING),
        "slow": running(slow, InstanceState.STARTING),
    }
    assert judge_rollout(T0, [fast, slow], {}, observed, T0 + 1).deadline == T0 + 10
