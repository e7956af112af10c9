"""The rollout judge: each engine change healthy, failed (and why), or still coming up; and
what those verdicts make of their generation."""

from __future__ import annotations

from dataclasses import replace

from sagellmd.desired import DesiredEngine
from sagellmd.engine_change import FAILED, HEALTHY, NONE, PENDING, EngineChange
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.rollout import CRASH_LIMIT, Verdict, judge_change, judge_generation
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


def judge(desired: DesiredEngine, instance: Instance | None, now: float) -> Verdict:
    spec = desired.spec
    return judge_change(desired.id, spec.spec_hash, T0, spec.startup_timeout_s, instance, now)


def change(id_: int, engine_id: str, verdict: str = PENDING, **fields) -> EngineChange:
    return EngineChange(id_, 1, engine_id, fields.pop("after_hash", "h"), verdict, **fields)


def test_a_change_is_healthy_once_its_engine_runs_the_new_spec_and_is_ready():
    a = engine("a")
    verdict = judge(a, running(a), T0 + 1)
    assert verdict.healthy is True and verdict.reason == "a ready"


def test_a_change_is_healthy_only_once_its_engine_stayed_ready_a_while():
    a = engine("a")
    just_ready = running(a, ready_at=T0 + 1)
    early = judge_change("a", a.spec.spec_hash, T0, 900, just_ready, T0 + 2, min_healthy_s=5)
    assert early.healthy is None and early.deadline == T0 + 6
    late = judge_change("a", a.spec.spec_hash, T0, 900, just_ready, T0 + 6, min_healthy_s=5)
    assert late.healthy is True


def test_ready_on_the_old_spec_is_not_healthy_yet():
    old, new = engine("a"), engine("a", model="org/new-1B")
    verdict = judge(new, running(old), T0 + 1)
    assert verdict.healthy is None
    assert verdict.deadline == T0 + new.spec.startup_timeout_s


def test_not_ready_by_its_startup_timeout_fails_the_change():
    a = engine("a", startup_timeout_s=30)
    starting = running(a, InstanceState.STARTING)
    assert judge(a, starting, T0 + 29.9).healthy is None
    verdict = judge(a, starting, T0 + 30)
    assert verdict.healthy is False and verdict.engine == "a"
    assert verdict.reason == "a not ready within startup_timeout_s=30 (starting)"


def test_a_pending_engine_that_times_out_says_its_own_pending_reason():
    a = engine("a", startup_timeout_s=5)
    pending = running(a, InstanceState.PENDING, pid=None, message="needs 1 GPU x 6.9 GiB")
    verdict = judge(a, pending, T0 + 6)
    assert verdict.reason == (
        "a not ready within startup_timeout_s=5 (pending: needs 1 GPU x 6.9 GiB)"
    )


def test_a_change_that_never_started_fails_by_its_deadline():
    a = engine("a", startup_timeout_s=5)
    verdict = judge(a, None, T0 + 6)
    assert verdict.healthy is False and "(not started)" in verdict.reason


def test_a_crash_loop_fails_the_change_with_its_own_exits_not_its_current_message():
    a = engine("a")
    looping = running(
        a,
        InstanceState.PENDING,
        failures=CRASH_LIMIT,
        last_exit_signal=9,
        message="needs 1 GPU x 6.9 GiB; waiting for GPU0",
    )
    verdict = judge(a, looping, T0 + 1)
    assert verdict.healthy is False
    assert verdict.reason == f"a exited {CRASH_LIMIT} times (last: signal 9)"
    said = replace(
        looping,
        state=InstanceState.BACKOFF,
        last_exit_signal=None,
        last_exit_code=1,
        message="exit code 1; next start in 2s; it said: CUDA out of memory",
    )
    assert judge(a, said, T0 + 1).reason == (
        f"a exited {CRASH_LIMIT} times (last: exit code 1); it said: CUDA out of memory"
    )
    once = replace(looping, failures=CRASH_LIMIT - 1)
    assert judge(a, once, T0 + 1).healthy is None


def test_a_failed_engine_fails_the_change_at_once():
    a = engine("a", restart="never")
    failed = running(a, InstanceState.FAILED, message="exit code 1")
    verdict = judge(a, failed, T0 + 1)
    assert verdict.healthy is False and verdict.reason == "a failed: exit code 1"


def test_exits_of_the_previous_spec_do_not_count_against_the_new_one():
    old, new = engine("a"), engine("a", model="org/new-1B")
    assert judge(new, running(old, InstanceState.BACKOFF, failures=5), T0 + 1).healthy is None


def test_a_generation_fails_only_by_its_own_changes():
    verdicts = {1: Verdict(None, "a starting", "a", T0 + 10), 2: Verdict(False, "b failed: x", "b")}
    outcome = judge_generation([change(1, "a"), change(2, "b")], verdicts)
    assert outcome.healthy is False and outcome.engine == "b" and outcome.reason == "b failed: x"


def test_a_generation_is_healthy_when_its_changes_came_up_or_needed_nothing():
    changes = [change(1, "a", HEALTHY, reason="a ready"), change(2, "gone", NONE, after_hash=None)]
    new = change(3, "c")
    outcome = judge_generation([*changes, new], {3: Verdict(True, "c ready", "c")})
    assert outcome.healthy is True and outcome.reason == "a, c ready"
    assert judge_generation([changes[1]], {}).reason == "nothing to start"


def test_the_earliest_deadline_is_the_next_look():
    verdicts = {1: Verdict(None, "", "a", T0 + 60), 2: Verdict(None, "", "b", T0 + 10)}
    outcome = judge_generation([change(1, "a"), change(2, "b")], verdicts)
    assert outcome.healthy is None and not outcome.settled and outcome.deadline == T0 + 10


def test_a_generation_overtaken_before_its_verdict_is_superseded_not_failed():
    outcome = judge_generation([change(1, "a", superseded_by=7)], {})
    assert outcome.healthy is None and outcome.settled and outcome.superseded_by == 7
    mixed = [change(1, "a", superseded_by=7), change(2, "b", HEALTHY)]
    assert judge_generation(mixed, {}).healthy is True


def test_a_failed_change_superseded_afterwards_keeps_its_generation_failed():
    outcome = judge_generation([change(1, "a", FAILED, reason="a failed", superseded_by=9)], {})
    assert outcome.healthy is False
