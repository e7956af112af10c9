"""Owns the tests of sagellmd/gateway/dispatch.py: caps, hand-over by policy, suspicion, limits.

The dispatcher runs on a fake clock (its `clock=`) and a seeded RNG; asyncio drives the waits.
Only the queue timeout uses the loop's real clock (asyncio.wait_for), with a short timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from sagellmd.gateway.dispatch import Dispatcher, Ticket
from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.routes import ModelGroup, Route, RouteTable


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _entry(
    engine_id: str,
    names: tuple[str, ...] = ("M",),
    ready: bool = True,
    cap: int = 1,
    message: str = "ready",
    **metadata: Any,
) -> dict[str, Any]:
    return {
        "id": engine_id,
        "state": "ready" if ready else "starting",
        "ready": ready,
        "url": f"http://127.0.0.1:{20000 + len(engine_id)}",
        "served_model": names[0],
        "names": [*names, engine_id],
        "max_concurrent_requests": cap,
        "metadata": metadata,
        "message": message,
    }


def _table(*entries: dict[str, Any], version: int = 1) -> RouteTable:
    return RouteTable.from_json({"version": version, "engines": list(entries)})


def _dispatcher(
    *entries: dict[str, Any],
    policy: str = "fifo",
    max_waiting: int = 16,
    timeout_s: float = 5.0,
    suspect_s: float = 2.0,
) -> tuple[Dispatcher, FakeClock]:
    clock = FakeClock()
    dispatcher = Dispatcher(
        policy,
        "least-outstanding",
        max_waiting,
        timeout_s,
        suspect_s,
        aging_s=10.0,
        clock=clock,
        rng=random.Random(7),
    )
    dispatcher.set_table(_table(*entries))
    return dispatcher, clock


def _group(dispatcher: Dispatcher, name: str = "M") -> ModelGroup:
    group = dispatcher.table.resolve(name)
    assert group is not None
    return group


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


async def _settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


def _acquire(dispatcher: Dispatcher, clock: FakeClock, name: str = "M", **ticket: Any):
    return dispatcher.acquire(_group(dispatcher, name), name, Ticket(clock(), **ticket))


def test_fast_path_takes_a_free_engine_without_queueing():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=4))
        changes = dispatcher.changes
        route = await _acquire(dispatcher, clock)
        assert isinstance(route, Route) and route.id == "a"
        assert dispatcher.inflight == {"a": 1}
        assert dispatcher.requests == {"a": 1}
        assert dispatcher.queue_lengths() == {"M": 0}
        assert dispatcher.changes > changes
        dispatcher.release("a")
        assert dispatcher.inflight == {"a": 0}

    _run(main())


def test_at_most_cap_in_flight_and_the_next_waits_for_a_release():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=3))
        for _ in range(3):
            await _acquire(dispatcher, clock)
        assert dispatcher.inflight["a"] == 3
        fourth = asyncio.create_task(_acquire(dispatcher, clock))
        await _settle()
        assert not fourth.done()
        assert dispatcher.queued_for("a") == 1
        assert dispatcher.queue_lengths() == {"M": 1}
        dispatcher.release("a")
        await _settle()
        assert fourth.done() and fourth.result().id == "a"
        assert dispatcher.inflight["a"] == 3  # the slot went straight to the waiter
        assert dispatcher.queued_for("a") == 0

    _run(main())


def test_replicas_share_the_load():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=10), _entry("b", cap=10))
        chosen = [(await _acquire(dispatcher, clock)).id for _ in range(10)]
        assert chosen.count("a") == chosen.count("b") == 5
        assert dispatcher.inflight == {"a": 5, "b": 5}

    _run(main())


def test_release_hands_the_slot_to_a_later_urgent_waiter_first():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="priority")
        await _acquire(dispatcher, clock)
        normal = asyncio.create_task(_acquire(dispatcher, clock, priority=0))
        await _settle()
        clock.now += 1.0
        urgent = asyncio.create_task(_acquire(dispatcher, clock, priority=-5))
        await _settle()
        assert dispatcher.queue_lengths() == {"M": 2}
        dispatcher.release("a")
        await _settle()
        assert urgent.done() and not normal.done()
        dispatcher.release("a")
        await _settle()
        assert normal.done()
        assert dispatcher.inflight["a"] == 1

    _run(main())


def test_fifo_hands_slots_over_in_arrival_order():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="fifo")
        await _acquire(dispatcher, clock)
        first = asyncio.create_task(_acquire(dispatcher, clock, priority=5))
        await _settle()
        second = asyncio.create_task(_acquire(dispatcher, clock, priority=-5))
        await _settle()
        dispatcher.release("a")
        await _settle()
        assert first.done() and not second.done()
        second.cancel()

    _run(main())


def test_a_newly_ready_engine_takes_the_waiting_requests():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", ready=False, cap=2))
        demanded: list[str] = []
        dispatcher.on_demand = demanded.append
        waiters = [asyncio.create_task(_acquire(dispatcher, clock)) for _ in range(3)]
        await _settle()
        assert not any(w.done() for w in waiters)
        assert demanded == ["M", "M", "M"]  # each waits for a model none of whose engines is up
        dispatcher.set_table(_table(_entry("a", ready=True, cap=2), version=2))
        await _settle()
        assert [w.done() for w in waiters] == [True, True, False]
        assert dispatcher.inflight["a"] == 2
        assert dispatcher.queued_for("a") == 1
        waiters[2].cancel()

    _run(main())


def test_an_engine_that_is_not_ready_is_never_chosen():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("down", ready=False, cap=50), _entry("up", cap=50))
        chosen = {(await _acquire(dispatcher, clock)).id for _ in range(20)}
        assert chosen == {"up"}
        assert "down" not in dispatcher.inflight

    _run(main())


def test_an_engine_that_leaves_ready_gets_no_new_requests():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=50), _entry("b", cap=50))
        dispatcher.set_table(_table(_entry("a", cap=50), _entry("b", ready=False), version=2))
        chosen = {(await _acquire(dispatcher, clock)).id for _ in range(10)}
        assert chosen == {"a"}

    _run(main())


def test_a_suspect_engine_is_skipped_until_suspect_s_passes():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=50), _entry("b", cap=50), suspect_s=2.0)
        dispatcher.mark_suspect("a")
        chosen = [(await _acquire(dispatcher, clock)).id for _ in range(5)]
        assert chosen == ["b"] * 5
        clock.now += 2.0
        # a has nothing in flight: least-outstanding takes it once suspicion is over.
        assert (await _acquire(dispatcher, clock)).id == "a"

    _run(main())


def test_a_changed_table_entry_clears_suspicion_and_an_unchanged_one_does_not():
    async def main() -> None:
        entries = (_entry("a", cap=50), _entry("b", cap=50))
        dispatcher, clock = _dispatcher(*entries)
        dispatcher.mark_suspect("a")
        dispatcher.set_table(_table(*entries, version=2))  # same entry for a: still suspect
        assert (await _acquire(dispatcher, clock)).id == "b"
        assert (await _acquire(dispatcher, clock)).id == "b"
        probed = _entry("a", cap=50, message="probe ok")
        dispatcher.set_table(_table(probed, entries[1], version=3))
        assert (await _acquire(dispatcher, clock)).id == "a"

    _run(main())


def test_when_every_ready_engine_is_suspect_they_still_serve():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=50), _entry("b", cap=50))
        dispatcher.mark_suspect("a")
        dispatcher.mark_suspect("b")
        chosen = {(await _acquire(dispatcher, clock)).id for _ in range(10)}
        assert chosen == {"a", "b"}

    _run(main())


def test_a_retry_on_the_only_engine_is_not_left_waiting():
    # The proxy retries a failed attempt with the same ticket: its engine is in `tried`. With
    # no other engine, that engine (free again) must serve the retry, not the queue timeout.
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=2), timeout_s=0.2)
        group = _group(dispatcher)
        ticket = Ticket(clock())
        first = await dispatcher.acquire(group, "M", ticket)
        dispatcher.release(first.id)
        dispatcher.mark_suspect(first.id)
        again = await dispatcher.acquire(group, "M", ticket)
        assert again.id == "a"
        assert dispatcher.inflight["a"] == 1

    _run(main())


def test_a_retry_prefers_an_engine_it_has_not_tried():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=5), _entry("b", cap=5))
        group = _group(dispatcher)
        ticket = Ticket(clock())
        first = await dispatcher.acquire(group, "M", ticket)
        dispatcher.release(first.id)
        second = await dispatcher.acquire(group, "M", ticket)
        assert second.id != first.id

    _run(main())


def test_a_full_queue_refuses_with_429():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), max_waiting=2)
        await _acquire(dispatcher, clock)
        waiters = [asyncio.create_task(_acquire(dispatcher, clock)) for _ in range(2)]
        await _settle()
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock)
        assert refused.value.status == 429
        assert refused.value.code == "queue_full"
        assert refused.value.retry_after_s is not None
        assert "gateway.queue.max_waiting" in refused.value.message
        assert dispatcher.queue_lengths() == {"M": 2}
        for waiter in waiters:
            waiter.cancel()

    _run(main())


def test_a_waiter_that_gets_no_slot_in_time_is_refused_with_503():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), timeout_s=0.05)
        await _acquire(dispatcher, clock)
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock)
        assert refused.value.status == 503
        assert refused.value.code == "queue_timeout"
        assert refused.value.retry_after_s is not None
        assert "a busy (1/1)" in refused.value.message  # why it waited
        assert dispatcher.queue_lengths() == {"M": 0}
        assert dispatcher.inflight["a"] == 1

    _run(main())


def test_a_timeout_while_no_engine_is_ready_says_what_the_engines_do():
    async def main() -> None:
        starting = _entry("a", ready=False, message="loading weights")
        dispatcher, clock = _dispatcher(starting, timeout_s=0.05)
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock)
        assert "a starting: loading weights" in refused.value.message

    _run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_leaks_no_slot():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1))
        held = await _acquire(dispatcher, clock)
        waiter = asyncio.create_task(_acquire(dispatcher, clock))
        await _settle()
        assert dispatcher.queued_for("a") == 1
        waiter.cancel()
        await _settle()
        assert waiter.cancelled()
        assert dispatcher.queued_for("a") == 0
        dispatcher.release(held.id)
        assert dispatcher.inflight["a"] == 0
        # The slot is free for the next request, not held by the one that left.
        assert (await _acquire(dispatcher, clock)).id == "a"

    _run(main())


def test_a_waiter_cancelled_as_it_is_handed_a_slot_does_not_lose_the_count():
    # release() hands the slot over, then the client leaves before the waiter runs: either
    # the waiter is cancelled and the slot is free again, or it got the route and holds it.
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1))
        held = await _acquire(dispatcher, clock)
        waiter = asyncio.create_task(_acquire(dispatcher, clock))
        await _settle()
        dispatcher.release(held.id)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        holding = 0 if waiter.cancelled() else 1
        assert dispatcher.inflight["a"] == holding
        assert dispatcher.queued_for("a") == 0

    _run(main())


def test_a_slot_handed_over_as_the_queue_timeout_fires_is_not_lost():
    # The release and the timeout fall due in one pass of the loop, the release first: on
    # Python 3.12+ wait_for then raises TimeoutError though the future holds a slot. The
    # loop is blocked (a short real sleep) so that both are due at once.
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), timeout_s=0.05)
        held = await _acquire(dispatcher, clock)
        waiter = asyncio.create_task(_acquire(dispatcher, clock))
        await _settle()
        asyncio.get_running_loop().call_later(0.01, dispatcher.release, held.id)
        time.sleep(0.1)
        await asyncio.gather(waiter, return_exceptions=True)
        holding = 1 if waiter.exception() is None else 0
        assert dispatcher.inflight["a"] == holding

    _run(main())


def _measure_drain(dispatcher: Dispatcher, clock: FakeClock, per_second: int) -> None:
    """Dispatch and finish `per_second` requests a second for 2 s of the fake clock."""

    async def main() -> None:
        for _ in range(2 * per_second):
            route = await _acquire(dispatcher, clock)
            dispatcher.release(route.id)
            clock.now += 1.0 / per_second

    return main()


def test_slo_refuses_what_the_measured_drain_rate_cannot_meet():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="slo")
        await _measure_drain(dispatcher, clock, per_second=10)
        await _acquire(dispatcher, clock)  # the one slot is busy now
        queued = [asyncio.create_task(_acquire(dispatcher, clock)) for _ in range(4)]
        await _settle()
        # 5 ahead of it (the 4 waiting and itself) at 10/s is about 0.5 s: 0.1 s is too short.
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock, deadline=clock() + 0.1)
        assert refused.value.status == 429
        assert refused.value.code == "slo_unreachable"
        assert "drains 10/s" in refused.value.message
        assert dispatcher.queue_lengths() == {"M": 4}  # refused at once, never queued
        # A deadline the rate can meet waits its turn.
        patient = asyncio.create_task(_acquire(dispatcher, clock, deadline=clock() + 5.0))
        await _settle()
        assert not patient.done()
        assert dispatcher.queue_lengths() == {"M": 5}
        for task in (*queued, patient):
            task.cancel()

    _run(main())


def test_slo_refuses_a_deadline_that_has_passed_when_it_must_queue():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="slo")
        await _acquire(dispatcher, clock)
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock, deadline=clock() - 0.01)
        assert refused.value.code == "slo_unreachable"
        assert "passed" in refused.value.message

    _run(main())


def test_slo_counts_the_engines_own_time_to_first_byte():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="slo")
        group = _group(dispatcher)
        await _measure_drain(dispatcher, clock, per_second=100)
        for _ in range(50):
            dispatcher.observe_first_byte(group, 0.5)  # the engine takes ~0.5 s to answer
        await _acquire(dispatcher, clock)
        # One ahead at 100/s is 10 ms, but 0.3 s left cannot cover the engine's 0.5 s.
        with pytest.raises(GatewayError) as refused:
            await _acquire(dispatcher, clock, deadline=clock() + 0.3)
        assert refused.value.code == "slo_unreachable"

    _run(main())


def test_a_request_with_a_deadline_takes_a_free_slot_without_a_check():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), policy="slo")
        route = await _acquire(dispatcher, clock, deadline=clock() - 1.0)
        assert route.id == "a"  # nothing waits for it: it is served, the engine decides

    _run(main())


def test_an_engine_releases_to_the_queues_of_every_name_it_serves():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1), _entry("b", cap=1))
        await _acquire(dispatcher, clock)
        await _acquire(dispatcher, clock)
        by_id = asyncio.create_task(_acquire(dispatcher, clock, name="a"))
        await _settle()
        assert dispatcher.queue_lengths() == {"M": 1}  # the queue of "a" waits for M too
        assert dispatcher.queued_for("a") == 1
        assert dispatcher.queued_for("b") == 0
        dispatcher.release("b")
        await _settle()
        assert not by_id.done()  # b does not serve the name "a"
        dispatcher.release("a")
        await _settle()
        assert by_id.done() and by_id.result().id == "a"

    _run(main())


def test_a_per_model_policy_from_the_table_orders_its_queue():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1, gateway_policy="priority"))
        await _acquire(dispatcher, clock)
        normal = asyncio.create_task(_acquire(dispatcher, clock, priority=0))
        await _settle()
        urgent = asyncio.create_task(_acquire(dispatcher, clock, priority=-5))
        await _settle()
        dispatcher.release("a")
        await _settle()
        assert urgent.done() and not normal.done()  # the global policy is fifo
        normal.cancel()

    _run(main())


def test_slo_default_comes_from_the_engines_metadata():
    dispatcher, _ = _dispatcher(_entry("a", slo_ttft_ms=250), _entry("b", names=("N",)))
    assert dispatcher.slo_default_ms(_group(dispatcher, "M")) == 250.0
    assert dispatcher.slo_default_ms(_group(dispatcher, "N")) is None


def test_every_change_of_counts_moves_the_change_counter():
    async def main() -> None:
        dispatcher, clock = _dispatcher(_entry("a", cap=1))
        seen = [dispatcher.changes]

        def moved() -> None:
            assert dispatcher.changes > seen[-1]
            seen.append(dispatcher.changes)

        held = await _acquire(dispatcher, clock)
        moved()
        waiter = asyncio.create_task(_acquire(dispatcher, clock))
        await _settle()
        moved()
        dispatcher.release(held.id)
        moved()
        await _settle()
        dispatcher.set_table(_table(_entry("a", cap=2), version=2))
        moved()
        dispatcher.release(waiter.result().id)
        moved()
        assert dispatcher.requests == {"a": 2}
        assert dispatcher.last_request_at["a"] > 0

    _run(main())


def test_queues_are_counted_per_served_model_whatever_name_came_first():
    async def main() -> None:
        dispatcher, clock = _dispatcher(
            _entry("a", names=("Org/M", "fast")), _entry("b", names=("Org/M",))
        )
        await _acquire(dispatcher, clock, name="fast")  # a's label: a alone
        await _acquire(dispatcher, clock, name="Org/M")
        waiters = [
            asyncio.create_task(_acquire(dispatcher, clock, name=name))
            for name in ("fast", "a", "Org/M")
        ]
        await _settle()
        assert dispatcher.queue_lengths() == {"Org/M": 3}
        assert dispatcher.queued_for("a") == 3
        assert dispatcher.queued_for("b") == 1
        for waiter in waiters:
            waiter.cancel()

    _run(main())


def test_demand_and_the_wait_limit_of_a_model_whose_engine_is_coming_up():
    table = RouteTable.from_json(
        {
            "version": 1,
            "engines": [
                {
                    "id": "e0",
                    "state": "idle",
                    "ready": False,
                    "url": "http://127.0.0.1:1",
                    "served_model": "m",
                    "names": ["m", "e0"],
                    "startup_timeout_s": 120,
                }
            ],
        }
    )

    async def scenario() -> tuple[dict[str, int], float, str | None]:
        dispatcher = Dispatcher("fifo", "least-outstanding", 10, 0.2, 2.0)
        dispatcher.set_table(table)
        group = table.resolve("m")
        assert group is not None
        waiting = asyncio.ensure_future(dispatcher.acquire(group, "m", Ticket(0.0)))
        await asyncio.sleep(0)
        figures = (dispatcher.demand(), dispatcher.wait_limit_s(group), dispatcher.coming_up(group))
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert dispatcher.demand() == {}
        return figures

    demand, limit, engine = asyncio.run(scenario())
    assert demand == {"e0": 1}
    assert limit == 120  # the engine's startup timeout, not the queue's 0.2 s
    assert engine == "e0"


def test_an_idle_able_engine_that_gets_busy_is_reported_at_once():
    def entry(engine_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": engine_id,
            "state": "ready",
            "ready": True,
            "url": "http://127.0.0.1:1",
            "served_model": engine_id,
            "names": [engine_id],
            **fields,
        }

    table = RouteTable.from_json(
        {
            "version": 1,
            "engines": [
                entry("on-demand", start="on-demand", idle_s=600),
                entry("idle-s", idle_s=30),
                entry("always"),
            ],
        }
    )
    busy: list[str] = []

    async def scenario() -> None:
        dispatcher = Dispatcher("fifo", "least-outstanding", 10, 1.0, 2.0)
        dispatcher.on_busy = busy.append
        dispatcher.set_table(table)
        for name in ("on-demand", "on-demand", "idle-s", "always"):
            group = table.resolve(name)
            assert group is not None
            await dispatcher.acquire(group, name, Ticket(0.0))
        dispatcher.release("on-demand")
        dispatcher.release("on-demand")
        group = table.resolve("on-demand")
        assert group is not None
        await dispatcher.acquire(group, "on-demand", Ticket(0.0))

    asyncio.run(scenario())
    # Only the 0 -> 1 edges of engines the daemon may stop when idle.
    assert busy == ["on-demand", "idle-s", "on-demand"]


def test_waiters_follow_their_name_to_a_replica_the_table_adds():
    def entry(engine_id: str, ready: bool) -> dict[str, Any]:
        return {
            "id": engine_id,
            "state": "ready" if ready else "starting",
            "ready": ready,
            "url": "http://127.0.0.1:1",
            "served_model": "m",
            "names": ["m", engine_id],
        }

    before = RouteTable.from_json({"version": 1, "engines": [entry("e0", False)]})
    after = RouteTable.from_json({"version": 2, "engines": [entry("e0", False), entry("e1", True)]})

    async def scenario() -> tuple[str, int]:
        dispatcher = Dispatcher("fifo", "least-outstanding", 10, 5.0, 2.0)
        dispatcher.set_table(before)
        group = before.resolve("m")
        assert group is not None
        waiting = asyncio.ensure_future(dispatcher.acquire(group, "m", Ticket(0.0)))
        await asyncio.sleep(0)
        assert not waiting.done()
        dispatcher.set_table(after)  # the waiter's name now also routes to a ready e1
        route = await asyncio.wait_for(waiting, 1.0)
        return route.id, sum(dispatcher.queue_lengths().values())

    engine, still_waiting = asyncio.run(scenario())
    assert engine == "e1"
    assert still_waiting == 0


def test_a_moved_waiter_that_times_out_leaves_no_trace():
    def entry(engine_id: str) -> dict[str, Any]:
        return {
            "id": engine_id,
            "state": "starting",
            "ready": False,
            "url": "http://127.0.0.1:1",
            "served_model": "m",
            "names": ["m", engine_id],
        }

    before = RouteTable.from_json({"version": 1, "engines": [entry("e0")]})
    after = RouteTable.from_json({"version": 2, "engines": [entry("e0"), entry("e1")]})

    async def scenario() -> int:
        dispatcher = Dispatcher("fifo", "least-outstanding", 10, 0.05, 2.0)
        dispatcher.set_table(before)
        group = before.resolve("m")
        assert group is not None
        waiting = asyncio.ensure_future(dispatcher.acquire(group, "m", Ticket(0.0)))
        await asyncio.sleep(0)
        dispatcher.set_table(after)
        with pytest.raises(GatewayError):
            await waiting
        return sum(dispatcher.queue_lengths().values())

    assert asyncio.run(scenario()) == 0
