"""Owns the tests of sagellmd/gateway/balance.py: each replica choice strategy and prefix_key."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellmd.gateway.balance import STRATEGIES, KvLoad, Replica, choose, prefix_key


def _replicas(*caps: int, **costs: float) -> list[Replica]:
    return [
        Replica(engine_id=f"e{i}", inflight=0, cap=cap, cost=costs.get(f"e{i}", 0.0))
        for i, cap in enumerate(caps)
    ]


def _simulate(strategy, replicas, rng, requests=200, concurrency=16, key_of=None):
    """Choices with in-flight tracking: `concurrency` in flight, a random one finishes."""
    counts: Counter[str] = Counter()
    inflight: list[Replica] = []
    for i in range(requests):
        if len(inflight) >= concurrency:
            done = inflight.pop(rng.randrange(len(inflight)))
            done.inflight -= 1
        key = key_of(i) if key_of else None
        replica = choose(strategy, replicas, now=float(i), key=key, rng=rng)
        assert replica is not None
        assert replica.inflight < replica.cap
        replica.inflight += 1
        inflight.append(replica)
        counts[replica.engine_id] += 1
    return counts


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ValueError, match="known: least-outstanding, prefix, kv-aware, cost"):
        choose("round-robin", _replicas(1), now=0.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_replica_means_none(strategy):
    assert choose(strategy, [], now=0.0, key=b"k") is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_full_means_none(strategy):
    replicas = _replicas(2, 3)
    replicas[0].inflight, replicas[1].inflight = 2, 3
    assert choose(strategy, replicas, now=0.0, key=b"k") is None


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=50, deadline=None)
@given(
    loads=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=6),
    key=st.binary(max_size=20),
)
def test_full_replicas_are_never_chosen(strategy, loads, key):
    replicas = [Replica(f"e{i}", inflight=min(n, cap), cap=cap) for i, (n, cap) in enumerate(loads)]
    chosen = choose(strategy, replicas, now=0.0, key=key, rng=random.Random(1))
    eligible = [r for r in replicas if r.inflight < r.cap]
    if eligible:
        assert chosen in eligible
    else:
        assert chosen is None


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("strategy", ["least-outstanding", "kv-aware", "cost"])
def test_two_replicas_share_200_requests_within_40_to_60_percent(strategy, seed):
    counts = _simulate(strategy, _replicas(256, 256), random.Random(seed))
    assert 80 <= counts["e0"] <= 120, counts


def test_least_outstanding_takes_the_least_loaded():
    replicas = _replicas(10, 10, 10)
    replicas[0].inflight, replicas[1].inflight, replicas[2].inflight = 4, 1, 3
    assert choose("least-outstanding", replicas, now=0.0).engine_id == "e1"


def test_least_outstanding_ties_are_random():
    replicas = _replicas(10, 10, 10)
    rng = random.Random(7)
    picks = Counter(
        choose("least-outstanding", replicas, now=0.0, rng=rng).engine_id for _ in range(3000)
    )
    assert set(picks) == {"e0", "e1", "e2"}
    assert all(800 <= n <= 1200 for n in picks.values()), picks


def test_prefix_sends_the_same_key_to_the_same_replica():
    replicas = _replicas(100, 100, 100, 100)
    homes = {}
    for i in range(50):
        key = f"system prompt {i}".encode()
        homes[key] = choose("prefix", replicas, now=0.0, key=key).engine_id
    for key, home in homes.items():
        assert choose("prefix", replicas, now=1.0, key=key).engine_id == home
    assert len(set(homes.values())) == 4  # the keys spread over the ring


def test_prefix_keeps_its_replica_until_the_bound_and_then_moves():
    replicas = _replicas(1000, 1000)
    key = b"the same long system prompt"
    home = choose("prefix", replicas, now=0.0, key=key)
    other = next(r for r in replicas if r is not home)
    chosen = []
    for _ in range(40):
        replica = choose("prefix", replicas, now=0.0, key=key)
        total = sum(r.inflight for r in replicas)
        bound = math.ceil(1.25 * (total + 1) / 2)
        if replica is other:
            # Moved off only because the home replica would exceed the bound.
            assert home.inflight + 1 > bound
        assert replica.inflight + 1 <= bound
        replica.inflight += 1
        chosen.append(replica.engine_id)
    assert chosen[0] == home.engine_id and other.engine_id in chosen
    # 125 % of the mean: the home replica carries at most 5 of every 8.
    assert home.inflight <= math.ceil(1.25 * 40 / 2)
    home.inflight = other.inflight = 0
    assert choose("prefix", replicas, now=0.0, key=key) is home  # back once load allows


def test_prefix_skips_a_full_home_replica():
    replicas = _replicas(1, 1000)
    key = next(
        k
        for k in (f"k{i}".encode() for i in range(1000))
        if choose("prefix", replicas, 0.0, key=k) is replicas[0]
    )
    replicas[0].inflight = 1
    assert choose("prefix", replicas, now=0.0, key=key) is replicas[1]


def test_prefix_ring_is_consistent_when_a_replica_leaves():
    replicas = _replicas(100, 100, 100, 100)
    keys = [f"prompt {i}".encode() for i in range(400)]
    before = {k: choose("prefix", replicas, 0.0, key=k).engine_id for k in keys}
    after = {k: choose("prefix", replicas[:3], 0.0, key=k).engine_id for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "e3" for k in moved)  # only the departed replica's keys move


def test_prefix_without_a_key_is_least_outstanding():
    replicas = _replicas(10, 10)
    replicas[0].inflight = 3
    assert choose("prefix", replicas, now=0.0, key=None) is replicas[1]
    assert choose("prefix", replicas, now=0.0, key=b"") is replicas[1]


def test_prefix_falls_back_when_every_free_replica_is_over_the_bound():
    replicas = _replicas(1, 100)
    replicas[0].inflight, replicas[1].inflight = 1, 5  # bound ceil(1.25*7/2) = 5 < 6
    assert choose("prefix", replicas, now=0.0, key=b"k") is replicas[1]


def _kv(waiting=0.0, running=0.0, usage=0.0, at=0.0) -> KvLoad:
    return KvLoad(waiting=waiting, running=running, kv_usage=usage, scraped_at=at)


def test_kv_aware_prefers_the_shorter_vllm_queue():
    replicas = _replicas(100, 100)
    replicas[0].kv = _kv(waiting=3, usage=0.1, at=9.9)
    replicas[1].kv = _kv(waiting=0, usage=0.9, at=9.9)
    replicas[0].inflight = 0
    replicas[1].inflight = 10
    assert choose("kv-aware", replicas, now=10.0) is replicas[1]


def test_kv_aware_then_prefers_the_emptier_cache():
    replicas = _replicas(100, 100)
    replicas[0].kv = _kv(usage=0.8, at=10.0)
    replicas[1].kv = _kv(usage=0.2, at=10.0)
    replicas[1].inflight = 5
    assert choose("kv-aware", replicas, now=10.0) is replicas[1]


def test_kv_aware_then_fewer_in_flight():
    replicas = _replicas(100, 100)
    replicas[0].kv = _kv(usage=0.51, running=4, at=10.0)
    replicas[1].kv = _kv(usage=0.53, running=4, at=10.0)  # same 5 % step
    replicas[0].inflight = 6
    replicas[1].inflight = 2
    assert choose("kv-aware", replicas, now=10.0) is replicas[1]


def test_kv_aware_stale_metrics_fall_back_to_local_counts():
    replicas = _replicas(100, 100)
    # e0's scrape says idle but is 5 s old; by local counts it is the busier one.
    replicas[0].kv = _kv(waiting=0, usage=0.0, at=5.0)
    replicas[1].kv = None
    replicas[0].inflight, replicas[1].inflight = 50, 10
    assert choose("kv-aware", replicas, now=10.0, stale_after_s=1.0) is replicas[1]
    # The same scrape, fresh, would win on KV use.
    assert choose("kv-aware", replicas, now=5.5, stale_after_s=1.0) is replicas[0]


def test_cost_prefers_the_cheapest_and_spills_only_at_its_cap():
    replicas = _replicas(2, 2, 5, e0=3.0, e1=1.0, e2=2.0)
    chosen = []
    for _ in range(9):
        replica = choose("cost", replicas, now=0.0, rng=random.Random(0))
        cheaper = [r for r in replicas if r.cost < replica.cost]
        assert all(r.inflight >= r.cap for r in cheaper)
        replica.inflight += 1
        chosen.append(replica.engine_id)
    assert chosen == ["e1"] * 2 + ["e2"] * 5 + ["e0"] * 2
    assert choose("cost", replicas, now=0.0) is None


def test_cost_balances_among_equal_cost():
    replicas = _replicas(10, 10, 10, e0=1.0, e1=1.0, e2=5.0)
    replicas[0].inflight = 4
    replicas[1].inflight = 2
    assert choose("cost", replicas, now=0.0) is replicas[1]


def test_prefix_key_of_a_completion_prompt():
    assert prefix_key({"prompt": "Once upon a time"}) == b"Once upon a time"
    assert prefix_key({"prompt": ["first", "second"]}) == b"first"
    assert prefix_key({"prompt": [1, 2, 3]}) == b"1,2,3"
    assert prefix_key({"prompt": "x" * 1000}, chars=10) == b"x" * 10


def test_prefix_key_of_chat_messages():
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "image_url", "image_url": {"url": "u"}},
                    {"type": "text", "text": " there"},
                ],
            },
        ]
    }
    assert prefix_key(body) == b"system:You are terse.\nuser:Hi there\n"
    # A longer conversation with the same start has the same key once past `chars`.
    long_a = {
        "messages": [{"role": "system", "content": "s" * 300}, {"role": "user", "content": "a"}]
    }
    long_b = {
        "messages": [{"role": "system", "content": "s" * 300}, {"role": "user", "content": "b"}]
    }
    assert prefix_key(long_a) == prefix_key(long_b)
    assert len(prefix_key(long_a)) == 256


def test_prefix_key_of_embedding_input_and_of_nothing():
    assert prefix_key({"input": "embed me"}) == b"embed me"
    assert prefix_key({"input": ["a", "b"]}) == b"a"
    assert prefix_key({"model": "m"}) == b""
    assert prefix_key({"messages": "not a list", "prompt": None}) == b""
    assert prefix_key({"messages": [None, 3, {"content": 7}]}) == b"\n"


def test_prefix_key_is_utf8():
    assert prefix_key({"prompt": "héllo ✓"}) == "héllo ✓".encode()


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_prefix_ring_spreads_keys_evenly(count):
    replicas = _replicas(*[10**6] * count)
    homes = Counter(
        choose("prefix", replicas, 0.0, key=f"user {i}: hello".encode()).engine_id
        for i in range(4000)
    )
    mean = 4000 / count
    assert len(homes) == count
    assert all(0.6 * mean <= n <= 1.4 * mean for n in homes.values()), homes
