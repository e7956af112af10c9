"""Owns the tests of sagellmd/reconcile/plan.py: each planning rule, and convergence properties.

The property tests drive `plan_actions` against a small simulated world that applies every
action with the real transition functions of sagellmd/instance.py, the way the executor and
the exit observer do, but with processes that start healthy at once and die when stopped.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagellmd.backoff import BackoffPolicy, backoff_delay
from sagellmd.desired import DesiredEngine
from sagellmd.instance import (
    Instance,
    InstanceState,
    StopIntent,
    became_ready,
    begin_start,
    begin_stop,
    begin_surge,
    exited,
    made_idle,
    retired,
    spawned,
)
from sagellmd.reconcile.actions import (
    Forget,
    Idle,
    Plan,
    Replace,
    Retire,
    Start,
    StartKind,
    Stop,
    Wait,
)
from sagellmd.reconcile.plan import plan_actions
from sagellmd.spec import EngineSpec

NOW = 10_000.0
POLICY = BackoffPolicy(base_s=2.0, max_s=60.0)
RESET_AFTER_S = 600.0


def spec(name="chat", **fields) -> EngineSpec:
    return EngineSpec(name=name, model=fields.pop("model", "org/model"), **fields)


def engine(engine_id="chat", restart_requested_at=None, **fields) -> DesiredEngine:
    return DesiredEngine(
        engine_id, None, spec(engine_id.split(".")[-1], **fields), restart_requested_at
    )


def instance(desired: DesiredEngine | None = None, state=InstanceState.READY, **fields) -> Instance:
    values = dict(
        engine_id=desired.id if desired else "chat",
        generation=1,
        spec_hash=desired.spec.spec_hash if desired else "0123456789abcdef",
        state=state,
        pid=4242
        if state
        in (
            InstanceState.STARTING,
            InstanceState.READY,
            InstanceState.UNHEALTHY,
            InstanceState.STOPPING,
        )
        else None,
        port=20000,
        started_at=NOW - 100,
    )
    values.update(fields)
    return Instance(**values)


def plan_one(desired, observed, now=NOW, backoff=POLICY):
    return plan_actions(desired, observed, now, backoff).actions


# -- one rule at a time --------------------------------------------------------


def test_new_engine_starts():
    chat = engine()
    assert plan_one([chat], {}) == (Start(chat, "new engine"),)


@pytest.mark.parametrize(
    "state", [InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY]
)
def test_removed_live_engine_stops(state):
    gone = instance(state=state)
    assert plan_one([], {"chat": gone}) == (
        Stop("chat", "no longer desired", StopIntent.DELIBERATE),
    )


@pytest.mark.parametrize(
    "state",
    [InstanceState.PENDING, InstanceState.BACKOFF, InstanceState.STOPPED, InstanceState.FAILED],
)
def test_removed_engine_without_process_is_forgotten(state):
    gone = instance(state=state)
    assert plan_one([], {"chat": gone}) == (Forget("chat", "no longer desired"),)


def test_removed_engine_that_is_stopping_is_left_alone():
    gone = instance(state=InstanceState.STOPPING, stop_intent=StopIntent.DELIBERATE)
    assert plan_one([], {"chat": gone}) == ()


@pytest.mark.parametrize("state", [InstanceState.STARTING, InstanceState.UNHEALTHY])
def test_spec_change_of_an_engine_not_serving_replaces_it(state):
    old = engine(model="old/model")
    new = engine(model="new/model")
    assert plan_one([new], {"chat": instance(old, state)}) == (Replace("chat", "spec changed"),)


def test_spec_change_of_a_ready_engine_surges_start_then_stop():
    old = engine(model="old/model")
    new = engine(model="new/model")
    (action,) = plan_one([new], {"chat": instance(old, InstanceState.READY)})
    assert (
        isinstance(action, Start) and action.kind is StartKind.SURGE and action.engine_id == "chat"
    )


def test_a_fixed_port_change_to_the_same_port_cannot_surge():
    old = engine(model="old/model", port=9000)
    new = engine(model="new/model", port=9000)
    ready = replace(instance(old, InstanceState.READY), port=9000)
    assert plan_one([new], {"chat": ready}) == (Replace("chat", "spec changed"),)


def test_the_retiring_process_is_retired_once_the_new_one_is_ready():
    old = engine(model="old/model")
    new = engine(model="new/model")
    serving = instance(old, InstanceState.READY)
    surged = begin_surge(serving, new.spec.spec_hash, 1, 20001, NOW).instance
    starting = spawned(surged, 99, NOW).instance
    assert plan_one([new], {"chat": starting})[0].action == "wait"
    ready = became_ready(starting, NOW).instance
    assert plan_one([new], {"chat": ready}) == (Retire("chat", "its replacement is ready"),)


@pytest.mark.parametrize(
    "state", [InstanceState.STOPPED, InstanceState.FAILED, InstanceState.BACKOFF]
)
def test_spec_change_of_a_stopped_engine_starts_it(state):
    old = engine(port=9000)
    new = engine(port=9001)
    observed = {"chat": instance(old, state, exited_at=NOW - 1, failures=4)}
    assert plan_one([new], observed) == (Start(new, "spec changed"),)


def test_change_of_an_in_place_field_does_nothing():
    old = engine(label="a", restart="always")
    new = engine(label="b", restart="never", metadata={"x": 1})
    assert plan_one([new], {"chat": instance(old)}) == ()


def test_unhealthy_engine_is_stopped_as_a_failure():
    chat = engine()
    sick = instance(chat, InstanceState.UNHEALTHY, message="health check failed 3 times")
    assert plan_one([chat], {"chat": sick}) == (
        Stop("chat", "health check failed 3 times", StopIntent.FAILURE),
    )


def test_unhealthy_engine_without_message_still_has_a_reason():
    chat = engine()
    (action,) = plan_one([chat], {"chat": instance(chat, InstanceState.UNHEALTHY, message="")})
    assert action == Stop("chat", "unhealthy", StopIntent.FAILURE)


@pytest.mark.parametrize("late_by", [0.0, 0.5, 1000.0])
def test_starting_past_startup_timeout_is_stopped_as_a_failure(late_by):
    chat = engine(startup_timeout_s=60.0)
    slow = instance(chat, InstanceState.STARTING, started_at=NOW - 60.0 - late_by)
    (action,) = plan_one([chat], {"chat": slow})
    assert isinstance(action, Stop)
    assert action.intent is StopIntent.FAILURE
    assert "startup_timeout_s=60" in action.reason


def test_starting_within_startup_timeout_waits_for_the_deadline():
    chat = engine(startup_timeout_s=60.0)
    young = instance(chat, InstanceState.STARTING, started_at=NOW - 10.0)
    assert plan_one([chat], {"chat": young}) == (Wait("chat", "waiting for /health", NOW + 50.0),)


def test_ready_engine_needs_nothing():
    chat = engine()
    assert plan_one([chat], {"chat": instance(chat)}) == ()


@pytest.mark.parametrize("failures", [1, 2, 3, 9])
def test_backoff_that_is_due_restarts(failures):
    chat = engine()
    delay = backoff_delay(failures, POLICY.base_s, POLICY.max_s)
    crashed = instance(chat, InstanceState.BACKOFF, failures=failures, exited_at=NOW - delay)
    assert plan_one([chat], {"chat": crashed}) == (
        Start(chat, f"crash #{failures} in a row", kind=StartKind.RESTART),
    )


@pytest.mark.parametrize("failures", [2, 3, 6, 20])
def test_backoff_that_is_not_due_waits_until_exit_plus_delay(failures):
    chat = engine()
    exited_at = NOW - 0.5
    crashed = instance(chat, InstanceState.BACKOFF, failures=failures, exited_at=exited_at)
    delay = backoff_delay(failures, POLICY.base_s, POLICY.max_s)
    assert delay > 0.5
    assert plan_one([chat], {"chat": crashed}) == (
        Wait("chat", f"backoff after crash #{failures}", exited_at + delay),
    )


def test_backoff_uses_the_policy_given():
    chat = engine()
    crashed = instance(chat, InstanceState.BACKOFF, failures=3, exited_at=NOW)
    (wait,) = plan_one([chat], {"chat": crashed}, backoff=BackoffPolicy(base_s=7.0, max_s=10.0))
    assert wait.until == NOW + 10.0
    (wait,) = plan_one([chat], {"chat": crashed}, backoff=BackoffPolicy(base_s=3.0, max_s=100.0))
    assert wait.until == NOW + 6.0


@pytest.mark.parametrize(
    "state", [InstanceState.READY, InstanceState.STARTING, InstanceState.UNHEALTHY]
)
def test_restart_request_stops_then_starts(state):
    chat = engine(restart_requested_at=NOW - 10)
    running = instance(chat, state, started_at=NOW - 50, ready_at=NOW - 40)
    (stop,) = plan_one([chat], {"chat": running})
    assert stop == Stop("chat", "restart requested", StopIntent.DELIBERATE)

    stopping = begin_stop(running, stop.intent, stop.reason).instance
    assert plan_one([chat], {"chat": stopping}) == ()
    stopped = exited(stopping, None, 15, NOW, "always", RESET_AFTER_S, 1.0, 60.0).instance
    assert stopped.state is InstanceState.STOPPED
    assert plan_one([chat], {"chat": stopped}) == (Start(chat, "restart requested"),)

    started = begin_start(stopped, "chat", chat.spec.spec_hash, 1, 20000, NOW + 1, False).instance
    assert plan_one([chat], {"chat": started}) == (
        Wait("chat", "waiting for /health", NOW + 1 + chat.spec.startup_timeout_s),
    )


def test_restart_request_older_than_the_process_is_done():
    chat = engine(restart_requested_at=NOW - 60)
    assert plan_one([chat], {"chat": instance(chat, started_at=NOW - 50)}) == ()


def test_spec_change_wins_over_restart_request():
    old = engine(model="a")
    new = engine(model="b", restart_requested_at=NOW)
    (action,) = plan_one([new], {"chat": instance(old)})
    assert isinstance(action, Start) and action.kind is StartKind.SURGE


@pytest.mark.parametrize("state", [InstanceState.STOPPED, InstanceState.FAILED])
def test_stopped_or_failed_with_the_same_spec_stays_down(state):
    chat = engine(restart="on-failure")
    down = instance(chat, state, exited_at=NOW - 5)
    assert plan_one([chat], {"chat": down}) == ()


@pytest.mark.parametrize("intent", [StopIntent.DELIBERATE, StopIntent.FAILURE, None])
def test_stopping_engine_needs_nothing(intent):
    chat = engine()
    stopping = instance(chat, InstanceState.STOPPING, stop_intent=intent)
    assert plan_one([chat], {"chat": stopping}) == ()
    changed = engine(model="other")
    assert plan_one([changed], {"chat": stopping}) == ()


def test_pending_engine_is_started_again():
    chat = engine()
    waiting = instance(
        chat,
        InstanceState.PENDING,
        message="no free port in 20000-20000",
        pid=None,
        started_at=None,
    )
    assert plan_one([chat], {"chat": waiting}) == (
        Start(chat, "retry: no free port in 20000-20000"),
    )


def test_actions_are_ordered_by_engine_id_and_waits_are_not_changes():
    a, b, c = engine("a"), engine("b", startup_timeout_s=100.0), engine("c")
    observed = {
        "b": instance(b, InstanceState.STARTING, started_at=NOW),
        "d": instance(None, InstanceState.READY, engine_id="d"),
    }
    plan = plan_actions([c, b, a], observed, NOW, POLICY)
    assert [action.engine_id for action in plan.actions] == ["a", "b", "c", "d"]
    assert [type(action) for action in plan.actions] == [Start, Wait, Start, Stop]
    assert [action.engine_id for action in plan.changes] == ["a", "c", "d"]


def test_plan_to_list_is_plain_data():
    chat = engine()
    plan = plan_actions([chat], {"chat": instance(chat, InstanceState.UNHEALTHY, message="x")}, NOW)
    # The keys of the API contract in docs/api.md: {"action", "engine", "reason", ...}.
    assert plan.to_list() == [
        {"engine": "chat", "reason": "x", "intent": "failure", "action": "stop"}
    ]
    assert Plan(()).to_list() == []


@pytest.mark.parametrize("kind", list(StartKind))
def test_a_start_lists_its_kind_as_the_action_and_its_engine_by_id(kind):
    chat = engine()
    start = Start(chat, "why", gpus=(1,), gpu_bytes=5, kind=kind)
    assert start.engine_id == "chat" and start.action == kind.value
    assert Plan((start,)).to_list() == [
        {"engine": "chat", "reason": "why", "gpus": (1,), "gpu_bytes": 5, "action": kind.value}
    ]


def test_default_backoff_policy():
    chat = engine()
    crashed = instance(chat, InstanceState.BACKOFF, failures=3, exited_at=NOW)
    (wait,) = plan_actions([chat], {"chat": crashed}, NOW).actions
    assert wait.until == NOW + 2.0


# -- bugs ------------------------------------------------------------------------


def test_engine_readded_while_stopping_is_started_again():
    chat = engine()
    running = instance(chat, InstanceState.READY)
    # `sagellm preset unset p; sagellm preset set p`: the first pass stops the engine...
    (stop,) = plan_one([], {"chat": running})
    stopping = begin_stop(running, stop.intent, stop.reason).instance
    # ...the engine is desired again before its process has exited...
    assert plan_one([chat], {"chat": stopping}) == ()
    stopped = exited(stopping, 0, None, NOW, "always", RESET_AFTER_S, 1.0, 60.0).instance
    # ...and once it has, nothing ever starts it: the desired engine stays down.
    assert [type(action) for action in plan_one([chat], {"chat": stopped})] == [Start]


def test_startup_timeout_counts_from_a_start_at_time_zero():
    chat = engine(startup_timeout_s=60.0)
    slow = instance(chat, InstanceState.STARTING, started_at=0.0)
    (action,) = plan_one([chat], {"chat": slow}, now=100.0)
    assert isinstance(action, Stop)


def test_backoff_counts_from_an_exit_at_time_zero():
    chat = engine()
    crashed = instance(chat, InstanceState.BACKOFF, failures=3, exited_at=0.0, started_at=0.0)
    assert plan_one([chat], {"chat": crashed}, now=100.0) == (
        Start(chat, "crash #3 in a row", kind=StartKind.RESTART),
    )


# -- a simulated world for the properties ------------------------------------------

ENGINE_IDS = ("a", "b", "c", "p.chat", "p.embed")
STALE_HASH = "5ta1e5ta1e5ta1e0"


@dataclass
class SimWorld:
    """Instances plus a clock; processes start healthy at once and die when stopped."""

    now: float
    desired: dict[str, DesiredEngine]
    instances: dict[str, Instance]
    pids: int = 1000
    log: list[str] = field(default_factory=list)

    def _policy(self, engine_id: str) -> str:
        # As observe.on_exit: an engine no longer desired is never restarted.
        wanted = self.desired.get(engine_id)
        return wanted.spec.restart if wanted else "never"

    def _exit(self, current: Instance) -> Instance:
        return exited(
            current,
            None,
            15,
            self.now,
            self._policy(current.engine_id),
            RESET_AFTER_S,
            POLICY.base_s,
            POLICY.max_s,
        ).instance

    def observe(self) -> None:
        """A STOPPING instance's process is gone: record its exit, as the pidfd watcher does."""
        for engine_id, current in list(self.instances.items()):
            if current.state is InstanceState.STOPPING:
                self.instances[engine_id] = self._exit(current)

    def plan(self) -> Plan:
        return plan_actions(list(self.desired.values()), dict(self.instances), self.now, POLICY)

    def apply(self, plan: Plan) -> None:
        planned_at = self.now
        for action in plan.actions:
            self.log.append(f"t={self.now:g} {action}")
            current = self.instances.get(action.engine_id)
            if isinstance(action, Start) and action.kind is not StartKind.SURGE:
                wanted = self.desired[action.engine_id]
                self.pids += 1
                starting = begin_start(
                    current,
                    action.engine_id,
                    wanted.spec.spec_hash,
                    1,
                    20000,
                    self.now,
                    action.kind is StartKind.RESTART,
                ).instance
                running = spawned(starting, self.pids, self.now).instance
                self.instances[action.engine_id] = became_ready(running, self.now).instance
            elif isinstance(action, Start):
                wanted = self.desired[action.engine_id]
                assert current is not None
                self.pids += 1
                starting = begin_surge(current, wanted.spec.spec_hash, 1, 20001, self.now).instance
                running = spawned(starting, self.pids, self.now).instance
                self.instances[action.engine_id] = became_ready(running, self.now).instance
            elif isinstance(action, Retire):
                assert current is not None and current.retiring is not None
                self.instances[action.engine_id] = retired(current, "exit code 0").instance
            elif isinstance(action, Stop | Replace):
                intent = action.intent if isinstance(action, Stop) else StopIntent.DELIBERATE
                assert current is not None
                stopping = begin_stop(current, intent, action.reason).instance
                self.instances[action.engine_id] = self._exit(stopping)
            elif isinstance(action, Forget):
                del self.instances[action.engine_id]
            elif isinstance(action, Idle):
                wanted = self.desired[action.engine_id]
                self.instances[action.engine_id] = made_idle(
                    current, action.engine_id, wanted.spec.spec_hash, 1, action.reason
                ).instance
            elif isinstance(action, Wait):
                assert action.until > planned_at
                self.now = max(self.now, action.until)

    def converged(self) -> bool:
        if set(self.instances) != set(self.desired):
            return False
        return all(
            current.state is InstanceState.READY
            and current.retiring is None
            and current.spec_hash == self.desired[engine_id].spec.spec_hash
            for engine_id, current in self.instances.items()
        )


def run_until_quiet(world: SimWorld, max_steps: int) -> int:
    """Observe, plan and apply until a plan is empty; returns the steps it took."""
    for step in range(max_steps):
        world.observe()
        plan = world.plan()
        if not plan.actions:
            return step
        world.apply(plan)
    history = "\n".join(world.log)
    raise AssertionError(f"no fixed point within {max_steps} steps:\n{history}")


specs = st.builds(
    lambda model, port, extra, env, tp, restart, timeout: dict(
        model=model,
        port=port,
        extra_args=extra,
        env=env,
        tensor_parallel=tp,
        restart=restart,
        startup_timeout_s=timeout,
    ),
    model=st.sampled_from(["org/a", "org/b"]),
    port=st.sampled_from([None, 9001, 9002]),
    extra=st.sampled_from([(), ("--enforce-eager",), ("--max-model-len", "4096")]),
    env=st.sampled_from([{}, {"HF_HUB_OFFLINE": "1"}]),
    tp=st.sampled_from([1, 2]),
    restart=st.sampled_from(["always", "on-failure"]),
    timeout=st.sampled_from([30.0, 900.0]),
)

times = st.floats(min_value=NOW - 2000.0, max_value=NOW, allow_nan=False)


@st.composite
def worlds(draw, restart_policies=("always", "on-failure")):
    desired_ids = draw(st.lists(st.sampled_from(ENGINE_IDS), unique=True, max_size=4))
    desired: dict[str, DesiredEngine] = {}
    for engine_id in desired_ids:
        fields = draw(specs)
        fields["restart"] = draw(st.sampled_from(restart_policies))
        requested = draw(st.one_of(st.none(), times))
        desired[engine_id] = engine(engine_id, restart_requested_at=requested, **fields)

    observed_ids = draw(st.lists(st.sampled_from(ENGINE_IDS), unique=True, max_size=5))
    instances: dict[str, Instance] = {}
    for engine_id in observed_ids:
        wanted = desired.get(engine_id)
        state = draw(st.sampled_from(list(InstanceState)))
        same_spec = wanted is not None and draw(st.booleans())
        spec_hash = (
            wanted.spec.spec_hash
            if same_spec
            else draw(
                st.sampled_from([STALE_HASH, engine(engine_id, model="org/c").spec.spec_hash])
            )
        )
        started_at = draw(st.floats(NOW - 2000.0, NOW - 1.0))
        current = Instance(
            engine_id=engine_id,
            generation=1,
            spec_hash=spec_hash,
            state=state,
            message=draw(st.sampled_from(["", "health check failed 3 times", "starting"])),
            pid=4000
            if state
            in (
                InstanceState.STARTING,
                InstanceState.READY,
                InstanceState.UNHEALTHY,
                InstanceState.STOPPING,
            )
            else None,
            port=20000,
            restarts=draw(st.integers(0, 5)),
            failures=draw(st.integers(0 if state is not InstanceState.BACKOFF else 1, 8)),
            started_at=started_at,
            ready_at=draw(st.one_of(st.none(), st.floats(started_at, NOW))),
            exited_at=draw(st.floats(started_at, NOW))
            if state in (InstanceState.BACKOFF, InstanceState.STOPPED, InstanceState.FAILED)
            else None,
            stop_intent=draw(st.sampled_from([None, StopIntent.DELIBERATE, StopIntent.FAILURE]))
            if state is InstanceState.STOPPING
            else None,
        )
        at_rest = current.state in (InstanceState.STOPPED, InstanceState.FAILED) or (
            current.state is InstanceState.STOPPING and current.stop_intent is StopIntent.DELIBERATE
        )
        if (
            same_spec
            and at_rest
            and not (
                wanted.restart_requested_at is not None and wanted.restart_requested_at > started_at
            )
        ):
            # A stopped instance whose spec is unchanged is at rest by design (its restart
            # policy or a removal stopped it); only a restart request moves it. Without one
            # it would never become ready, so give it one (see the xfail test above for
            # the removal case, which is a bug).
            desired[engine_id] = replace(wanted, restart_requested_at=NOW)
            assert NOW > started_at
        instances[engine_id] = current
    return SimWorld(now=NOW, desired=desired, instances=instances)


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MAX_STEPS = 12


@PROPERTY_SETTINGS
@given(world=worlds())
def test_planning_converges_to_every_desired_engine_ready(world):
    steps = run_until_quiet(world, MAX_STEPS)
    assert world.converged(), "\n".join(world.log)
    assert steps <= MAX_STEPS


@PROPERTY_SETTINGS
@given(world=worlds())
def test_a_converged_world_plans_nothing(world):
    run_until_quiet(world, MAX_STEPS)
    assert world.converged()
    for later in (0.0, 1.0, RESET_AFTER_S * 10):
        plan = plan_actions(
            list(world.desired.values()), world.instances, world.now + later, POLICY
        )
        assert plan.actions == ()


@PROPERTY_SETTINGS
@given(world=worlds(restart_policies=("always", "on-failure", "never")))
def test_planning_reaches_a_fixed_point_under_any_restart_policy(world):
    run_until_quiet(world, MAX_STEPS)
    assert set(world.instances) == set(world.desired)
    for engine_id, current in world.instances.items():
        wanted = world.desired[engine_id]
        assert current.spec_hash == wanted.spec.spec_hash
        if current.state is not InstanceState.READY:
            # Only a crash under `restart: never` may leave a desired engine down.
            assert (current.state, wanted.spec.restart) == (InstanceState.FAILED, "never")


@PROPERTY_SETTINGS
@given(
    world=worlds(restart_policies=("always", "on-failure", "never")),
    now=st.floats(NOW - 100.0, NOW + 2000.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_plan_is_deterministic_and_pure(world, now, seed):
    desired = list(world.desired.values())
    observed = dict(world.instances)
    desired_before = copy.deepcopy(desired)
    observed_before = copy.deepcopy(observed)

    first = plan_actions(desired, observed, now, POLICY)
    second = plan_actions(desired, observed, now, POLICY)
    shuffled = desired[:]
    random.Random(seed).shuffle(shuffled)
    reordered = plan_actions(shuffled, dict(reversed(observed.items())), now, POLICY)

    assert first == second == reordered
    assert desired == desired_before
    assert observed == observed_before
    # At most one action per engine, and only for engines someone knows about.
    ids = [action.engine_id for action in first.actions]
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(world.desired) | set(world.instances)
