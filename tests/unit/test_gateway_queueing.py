"""Owns the tests of sagellmd/gateway/queueing.py: the order of each policy, bounds, removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellmd.gateway.queueing import POLICIES, QueueFull, Waiter, WaitQueue


def _drain(queue: WaitQueue, now: float = 0.0) -> list[Waiter]:
    out = []
    while (waiter := queue.pop(now)) is not None:
        out.append(waiter)
    return out


def _names(waiters: list[Waiter]) -> list[object]:
    return [w.handle for w in waiters]


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="known: fifo, priority, slo, fair, adaptive"):
        WaitQueue("lifo", 10)


def test_bad_aging_is_refused():
    with pytest.raises(ValueError, match="aging_s"):
        WaitQueue("priority", 10, aging_s=0)


@pytest.mark.parametrize("policy", POLICIES)
def test_empty_queue_pops_none(policy):
    queue = WaitQueue(policy, 4)
    assert len(queue) == 0
    assert queue.pop(0.0) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_full_queue_raises_and_keeps_its_length(policy):
    queue = WaitQueue(policy, 2)
    queue.push(Waiter(arrived=0.0))
    queue.push(Waiter(arrived=0.1))
    with pytest.raises(QueueFull, match="2 requests waiting"):
        queue.push(Waiter(arrived=0.2))
    assert len(queue) == 2
    queue.pop(0.3)
    queue.push(Waiter(arrived=0.4))  # room again
    assert len(queue) == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_push_numbers_the_waiters_in_arrival_order(policy):
    queue = WaitQueue(policy, 10)
    waiters = [Waiter(arrived=float(i)) for i in range(3)]
    for waiter in waiters:
        queue.push(waiter)
    assert [w.seq for w in waiters] == [1, 2, 3]


@pytest.mark.parametrize("policy", POLICIES)
def test_defaults_are_served_in_arrival_order(policy):
    # Every policy is FIFO when nobody has a priority, a deadline or a distinct client.
    queue = WaitQueue(policy, 100)
    for i in range(50):
        queue.push(Waiter(arrived=i * 0.5, handle=i))
    assert _names(_drain(queue)) == list(range(50))


def test_priority_lower_first_ties_fifo():
    queue = WaitQueue("priority", 10, aging_s=1000.0)
    for i, priority in enumerate([5, 0, 5, -1, 0]):
        queue.push(Waiter(arrived=float(i), priority=priority, handle=i))
    assert _names(_drain(queue, now=5.0)) == [3, 1, 4, 0, 2]


def test_priority_serves_a_late_urgent_request_first():
    queue = WaitQueue("priority", 10)
    for i in range(3):
        queue.push(Waiter(arrived=i * 0.01, handle=f"normal{i}"))
    queue.push(Waiter(arrived=0.05, priority=-5, handle="urgent"))
    assert queue.pop(0.06).handle == "urgent"


def test_priority_aging_means_one_class_per_aging_period():
    queue = WaitQueue("priority", 10, aging_s=10.0)
    queue.push(Waiter(arrived=0.0, priority=3, handle="old-low"))
    # Arrived 29 s later with a class 3 better: the old one has aged 2.9 classes only.
    queue.push(Waiter(arrived=29.0, priority=0, handle="new-high"))
    # Arrived 31 s later: the old one has aged past it.
    queue.push(Waiter(arrived=31.0, priority=0, handle="newer-high"))
    assert _names(_drain(queue, now=31.0)) == ["new-high", "old-low", "newer-high"]


def test_low_priority_never_starves_under_a_stream_of_urgent_work():
    queue = WaitQueue("priority", 1000, aging_s=1.0)
    queue.push(Waiter(arrived=0.0, priority=10, handle="low"))
    served_at = None
    # One urgent request arrives and one is served every 0.1 s.
    for tick in range(1, 500):
        now = tick * 0.1
        queue.push(Waiter(arrived=now, priority=0, handle=tick))
        if queue.pop(now).handle == "low":
            served_at = now
            break
    assert served_at is not None and served_at <= 10.2


def test_slo_earliest_deadline_first_then_no_deadline_fifo():
    queue = WaitQueue("slo", 10)
    queue.push(Waiter(arrived=0.0, handle="none1"))
    queue.push(Waiter(arrived=0.1, deadline=5.0, handle="d5"))
    queue.push(Waiter(arrived=0.2, deadline=1.0, handle="d1"))
    queue.push(Waiter(arrived=0.3, handle="none2"))
    queue.push(Waiter(arrived=0.4, deadline=1.0, handle="d1-later"))
    assert _names(_drain(queue)) == ["d1", "d1-later", "d5", "none1", "none2"]


def test_slo_ignores_priority():
    queue = WaitQueue("slo", 10)
    queue.push(Waiter(arrived=0.0, priority=-10, deadline=9.0, handle="urgent-late"))
    queue.push(Waiter(arrived=0.1, priority=10, deadline=2.0, handle="lazy-soon"))
    assert _names(_drain(queue)) == ["lazy-soon", "urgent-late"]


def test_nan_deadline_is_refused():
    queue = WaitQueue("slo", 10)
    with pytest.raises(ValueError, match="NaN"):
        queue.push(Waiter(arrived=0.0, deadline=float("nan")))


def test_fair_round_robin_between_clients():
    queue = WaitQueue("fair", 100)
    for i in range(10):
        queue.push(Waiter(arrived=i * 0.01, client="burst", handle=f"b{i}"))
    queue.push(Waiter(arrived=0.2, client="alice", handle="a0"))
    queue.push(Waiter(arrived=0.3, client="bob", handle="x0"))
    queue.push(Waiter(arrived=0.4, client="bob", handle="x1"))
    order = _names(_drain(queue))
    assert order[:6] == ["b0", "a0", "x0", "b1", "x1", "b2"]
    assert order[6:] == [f"b{i}" for i in range(3, 10)]


def test_fair_client_that_comes_back_joins_the_end_of_the_rotation():
    queue = WaitQueue("fair", 100)
    queue.push(Waiter(arrived=0.0, client="a", handle="a0"))
    queue.push(Waiter(arrived=0.0, client="b", handle="b0"))
    queue.push(Waiter(arrived=0.0, client="b", handle="b1"))
    assert queue.pop(1.0).handle == "a0"
    queue.push(Waiter(arrived=1.0, client="a", handle="a1"))
    assert _names(_drain(queue)) == ["b0", "a1", "b1"]


def test_adaptive_priority_class_then_deadline_then_arrival():
    queue = WaitQueue("adaptive", 10, aging_s=100.0)
    queue.push(Waiter(arrived=1.0, handle="plain"))
    queue.push(Waiter(arrived=2.0, deadline=50.0, handle="d50"))
    queue.push(Waiter(arrived=3.0, deadline=10.0, handle="d10"))
    queue.push(Waiter(arrived=4.0, priority=1, deadline=5.0, handle="low-d5"))
    queue.push(Waiter(arrived=5.0, priority=-1, handle="high"))
    queue.push(Waiter(arrived=6.0, handle="plain2"))
    assert _names(_drain(queue)) == ["high", "d10", "d50", "plain", "plain2", "low-d5"]


def test_adaptive_ages_classes():
    queue = WaitQueue("adaptive", 10, aging_s=10.0)
    queue.push(Waiter(arrived=0.0, priority=2, handle="old-low"))
    queue.push(Waiter(arrived=15.0, priority=0, handle="mid"))  # class 1 by then
    queue.push(Waiter(arrived=31.0, priority=0, handle="new"))  # class 3: behind old-low (2)
    assert _names(_drain(queue, now=31.0)) == ["mid", "old-low", "new"]


@pytest.mark.parametrize("policy", POLICIES)
def test_remove_takes_out_exactly_that_waiter(policy):
    queue = WaitQueue(policy, 10)
    waiters = [Waiter(arrived=float(i), client=f"c{i % 2}", handle=i) for i in range(5)]
    for waiter in waiters:
        queue.push(waiter)
    assert queue.remove(waiters[2]) is True
    assert queue.remove(waiters[2]) is False
    assert len(queue) == 4
    assert queue.remove(Waiter(arrived=9.0)) is False
    rest = _drain(queue)
    assert waiters[2] not in rest and len(rest) == 4
    assert queue.remove(waiters[0]) is False  # popped already


@pytest.mark.parametrize("policy", POLICIES)
def test_removed_waiters_free_their_room(policy):
    # Requests that time out while no engine is ready must not fill the queue.
    queue = WaitQueue(policy, 3)
    for i in range(1000):
        waiter = Waiter(arrived=float(i), client=f"c{i % 7}")
        queue.push(waiter)
        assert queue.remove(waiter)
    assert len(queue) == 0
    assert queue.pop(0.0) is None


def test_pushing_a_queued_waiter_twice_is_refused():
    queue = WaitQueue("fifo", 10)
    waiter = Waiter(arrived=0.0)
    queue.push(waiter)
    with pytest.raises(ValueError, match="queued already"):
        queue.push(waiter)


_waiter_fields = st.tuples(
    st.integers(min_value=-3, max_value=3),  # priority
    st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False)),  # deadline
    st.sampled_from(["a", "b", "c"]),  # client
    st.floats(min_value=0, max_value=5),  # arrival gap
)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    fields=st.lists(_waiter_fields, max_size=30),
    removals=st.lists(st.integers(min_value=0, max_value=29), max_size=10),
)
def test_ahead_of_matches_the_pop_order_and_len_stays_exact(policy, fields, removals):
    queue = WaitQueue(policy, 100, aging_s=3.0)
    now = 0.0
    waiters = []
    for priority, deadline, client, gap in fields:
        now += gap
        waiter = Waiter(arrived=now, priority=priority, deadline=deadline, client=client)
        # Predicted for a newcomer before the push equals its place after it.
        predicted = queue.ahead_of(waiter)
        queue.push(waiter)
        assert queue.ahead_of(waiter) == predicted
        waiters.append(waiter)
    live = list(waiters)
    for index in removals:
        if index < len(waiters) and queue.remove(waiters[index]):
            live.remove(waiters[index])
    assert len(queue) == len(live)
    expected = {id(w): queue.ahead_of(w) for w in live}
    order = _drain(queue, now)
    assert sorted(map(id, order)) == sorted(map(id, live))
    assert {id(w): position for position, w in enumerate(order)} == expected


@settings(max_examples=100, deadline=None)
@given(fields=st.lists(_waiter_fields, min_size=1, max_size=40))
def test_fair_never_serves_a_client_twice_while_another_waits_longer(fields):
    queue = WaitQueue("fair", 100)
    for i, (_, _, client, _) in enumerate(fields):
        queue.push(Waiter(arrived=float(i), client=client))
    order = [w.client for w in _drain(queue)]
    # Up to the point where only one client is left, no client gets two turns in a row.
    remaining = {c: order.count(c) for c in set(order)}
    for previous, current in zip(order, order[1:], strict=False):
        remaining[previous] -= 1
        if sum(1 for n in remaining.values() if n > 0) > 1:
            assert previous != current
