"""Owns the tests of sagellmd/gpu/eviction.py and eviction_search.py: who goes, where it goes."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellmd.gpu.eviction import Eviction, EvictionCandidate, choose_evictions
from sagellmd.gpu.placement import (
    GIB,
    GpuCapacity,
    GpuView,
    NotPlaced,
    Placed,
    Reservation,
    available_bytes,
    place,
    reserved_by_gpu,
)


def view(*sizes_gib: float, headroom: float = 1.0) -> GpuView:
    return GpuView(tuple(GpuCapacity(i, int(s * GIB)) for i, s in enumerate(sizes_gib)), headroom)


def held(engine_id: str, gpus: tuple[int, ...], gib: float) -> Reservation:
    return Reservation(engine_id, gpus, int(gib * GIB))


def idle(engine_id: str, last_used: float = 0.0) -> EvictionCandidate:
    return EvictionCandidate(engine_id, evictable=True, busy=False, last_used=last_used)


# -- examples ------------------------------------------------------------------------


def test_no_eviction_when_the_engine_fits_already():
    outcome = choose_evictions(1, 30 * GIB, view(80), [held("a", (0,), 40)], [idle("a")])

    assert outcome == Eviction((), Placed((0,), 30 * GIB))


def test_evicts_the_least_recently_used_of_two_that_would_each_do():
    reservations = [held("old", (0,), 40), held("new", (0,), 40)]
    candidates = [idle("new", last_used=200.0), idle("old", last_used=100.0)]

    outcome = choose_evictions(1, 30 * GIB, view(80), reservations, candidates)

    assert outcome == Eviction(("old",), Placed((0,), 30 * GIB))


def test_one_large_engine_goes_rather_than_two_small_older_ones():
    reservations = [held("s1", (0,), 20), held("s2", (0,), 20), held("big", (0,), 40)]
    candidates = [idle("s1", 1.0), idle("s2", 2.0), idle("big", 3.0)]

    outcome = choose_evictions(1, 40 * GIB, view(80), reservations, candidates)

    assert isinstance(outcome, Eviction)
    assert outcome.evict == ("big",)


def test_among_pairs_it_spares_the_most_recently_used_engine():
    # Any two of the four make room on the one GPU: the pair without the newest (d) and,
    # of those, without the next newest (c) goes.
    reservations = [held(name, (0,), 20) for name in "abcd"]
    candidates = [idle("a", 1.0), idle("b", 2.0), idle("c", 3.0), idle("d", 4.0)]

    outcome = choose_evictions(1, 40 * GIB, view(80), reservations, candidates)

    assert isinstance(outcome, Eviction)
    assert outcome.evict == ("a", "b")


def test_never_a_busy_engine_even_if_it_is_the_oldest():
    reservations = [held("serving", (0,), 50), held("quiet", (1,), 50)]
    candidates = [
        EvictionCandidate("serving", evictable=True, busy=True, last_used=1.0),
        idle("quiet", last_used=99.0),
    ]

    outcome = choose_evictions(1, 60 * GIB, view(80, 80), reservations, candidates)

    assert outcome == Eviction(("quiet",), Placed((1,), 60 * GIB))


def test_a_tensor_parallel_engine_frees_room_on_all_its_gpus():
    reservations = [held("tp2", (0, 1), 60), held("x", (0,), 10), held("y", (1,), 10)]
    candidates = [idle("tp2", 5.0), idle("x", 1.0), idle("y", 2.0)]

    outcome = choose_evictions(2, 60 * GIB, view(80, 80), reservations, candidates)

    assert outcome == Eviction(("tp2",), Placed((0, 1), 60 * GIB))


def test_the_placement_keeps_the_headroom():
    # 80 GiB at 0.95 is 76 GiB: evicting "a" leaves 76 - 30 = 46, short of 50.
    reservations = [held("a", (0,), 20), held("b", (0,), 30)]
    candidates = [idle("a", 1.0), idle("b", 2.0)]

    outcome = choose_evictions(1, 50 * GIB, view(80, headroom=0.95), reservations, candidates)

    assert outcome == Eviction(("b",), Placed((0,), 50 * GIB))


def test_only_busy_or_always_on_holders_means_no_room_with_their_names():
    reservations = [held("a", (0, 1), 50), held("b", (0, 1), 20), held("c", (1,), 5)]
    candidates = [
        EvictionCandidate("a", evictable=True, busy=True, last_used=1.0),
        EvictionCandidate("b", evictable=False, busy=False, last_used=1.0),
        idle("c"),
    ]

    outcome = choose_evictions(2, 40 * GIB, view(80, 80), reservations, candidates)

    assert outcome == NotPlaced(
        "needs 2 GPUs x 40.0 GiB; only busy or always-on engines hold the memory:"
        " a (busy), b (always-on)"
    )


def test_a_long_list_of_holders_is_cut_after_eight_names():
    reservations = [held(f"e{i:02}", (0,), 8) for i in range(10)]
    candidates = [EvictionCandidate(r.engine_id, False, False, 0.0) for r in reservations]

    outcome = choose_evictions(1, 20 * GIB, view(80), reservations, candidates)

    assert isinstance(outcome, NotPlaced)
    assert outcome.message.endswith("e06 (always-on), e07 (always-on) and 2 more")


def test_holders_that_are_not_candidates_are_never_evicted():
    reservations = [held("gone#retiring", (0,), 60), held("a", (0,), 10)]

    outcome = choose_evictions(1, 30 * GIB, view(80), reservations, [idle("a")])

    assert isinstance(outcome, NotPlaced)
    assert "gone#retiring (not idle-able)" in outcome.message


def test_too_large_for_the_empty_gpus_says_so():
    outcome = choose_evictions(1, 90 * GIB, view(80), [held("a", (0,), 10)], [idle("a")])

    assert outcome == NotPlaced(
        "needs 1 GPU x 90.0 GiB; GPU0 80.0 GiB free, even with no engine running"
    )


def test_a_start_on_the_gpu_means_wait_rather_than_evict():
    # It fits on GPU0 once the engine starting there is up; nothing is evicted meanwhile.
    reservations = [held("starting", (0,), 10), held("a", (1,), 70)]

    outcome = choose_evictions(1, 50 * GIB, view(80, 80), reservations, [idle("a")], starting={0})

    assert isinstance(outcome, NotPlaced)
    assert outcome.busy
    assert "waiting for the engine starting on GPU0" in outcome.message


def test_a_spent_search_budget_still_gives_a_minimal_set():
    reservations = [held(f"e{i}", (0,), 10) for i in range(7)]
    candidates = [idle(f"e{i}", float(i)) for i in range(7)]

    outcome = choose_evictions(1, 30 * GIB, view(80), reservations, candidates, max_steps=0)

    assert isinstance(outcome, Eviction)
    assert not outcome.exact
    assert outcome.evict == ("e0", "e1")


# -- properties on small instances, against brute force ------------------------------


@dataclass(frozen=True)
class Instance:
    view: GpuView
    reservations: tuple[Reservation, ...]
    candidates: tuple[EvictionCandidate, ...]
    count: int
    need: int
    starting: frozenset[int]


@st.composite
def instances(draw: st.DrawFn) -> Instance:
    """Small GPUs packed with engines the way the daemon packs them, and one more to place.

    Drawn so that most instances need an eviction: the new engine mostly asks for more
    than fits now and no more than would fit on empty GPUs.
    """
    sizes = draw(st.lists(st.sampled_from([24, 48, 80]), min_size=1, max_size=4))
    gpus = tuple(
        GpuCapacity(i, size * GIB, draw(st.sampled_from([0, 0, 2, 6])) * GIB)
        for i, size in enumerate(sizes)
    )
    gpu_view = GpuView(gpus, draw(st.sampled_from([0.9, 0.95, 1.0])))
    reservations: list[Reservation] = []
    candidates: list[EvictionCandidate] = []
    for index in range(draw(st.integers(1, 9))):
        count = draw(st.integers(1, min(2, len(gpus))))
        need = draw(st.integers(2, 30)) * GIB
        placed = place(count, need, gpus, reservations, gpu_view.headroom)
        if isinstance(placed, Placed):
            engine_id = f"e{index}"
            reservations.append(Reservation(engine_id, placed.gpus, placed.per_gpu_bytes))
            candidates.append(
                EvictionCandidate(
                    engine_id,
                    evictable=draw(st.sampled_from([True, True, False])),
                    busy=draw(st.sampled_from([False, False, False, True])),
                    last_used=float(draw(st.integers(0, 4))),
                )
            )
    starting = draw(st.sampled_from([frozenset(), frozenset(), frozenset({0})]))
    count = draw(st.integers(1, min(3, len(gpus))))
    # Mostly between what fits now and what would fit on empty GPUs (an eviction may help).
    reserved = reserved_by_gpu(reservations)
    now = sorted(available_bytes(g, reserved.get(g.index, 0), gpu_view.headroom) for g in gpus)
    empty = sorted(available_bytes(g, 0, gpu_view.headroom) for g in gpus)
    low, high = max(1, now[-count] + 1), empty[-count]
    if low < high and draw(st.sampled_from([True, True, True, False])):
        need = draw(st.integers(low, high))
    else:
        need = draw(st.integers(1, max(sizes))) * GIB
    return Instance(gpu_view, tuple(reservations), tuple(candidates), count, need, starting)


def pool_of(instance: Instance) -> list[EvictionCandidate]:
    """The evictable candidates, oldest first (ties by id), as the rules rank them."""
    return sorted(
        (c for c in instance.candidates if c.evictable and not c.busy),
        key=lambda c: (c.last_used, c.engine_id),
    )


def placed_without(instance: Instance, evicted: Sequence[str]) -> Placed | NotPlaced:
    kept = [r for r in instance.reservations if r.engine_id not in evicted]
    return place(
        instance.count,
        instance.need,
        instance.view.gpus,
        kept,
        instance.view.headroom,
        instance.starting,
    )


def fits_without(instance: Instance, evicted: Sequence[str]) -> bool:
    return isinstance(placed_without(instance, evicted), Placed)


def brute_force_best(instance: Instance) -> tuple[str, ...] | None:
    """Fewest engines, then the set whose newest member is oldest (and so on down)."""
    pool = pool_of(instance)
    rank = {c.engine_id: i for i, c in enumerate(pool)}
    for size in range(len(pool) + 1):
        fitting = [
            subset
            for subset in itertools.combinations([c.engine_id for c in pool], size)
            if fits_without(instance, subset)
        ]
        if fitting:
            best = min(fitting, key=lambda s: sorted((rank[e] for e in s), reverse=True))
            return tuple(sorted(best, key=rank.__getitem__))
    return None


def decide(instance: Instance, max_steps: int | None = None) -> Eviction | NotPlaced:
    extra = {} if max_steps is None else {"max_steps": max_steps}
    return choose_evictions(
        instance.count,
        instance.need,
        instance.view,
        instance.reservations,
        instance.candidates,
        instance.starting,
        **extra,
    )


@settings(max_examples=250, deadline=None)
@given(instances(), st.sampled_from([None, 0]))
def test_never_evicts_a_busy_or_always_on_engine(instance, max_steps):
    outcome = decide(instance, max_steps)

    if isinstance(outcome, Eviction):
        by_id = {c.engine_id: c for c in instance.candidates}
        assert all(by_id[e].evictable and not by_id[e].busy for e in outcome.evict)


@settings(max_examples=250, deadline=None)
@given(instances(), st.sampled_from([None, 0]))
def test_the_result_never_overcommits_a_gpu(instance, max_steps):
    outcome = decide(instance, max_steps)

    if isinstance(outcome, Eviction):
        kept = [r for r in instance.reservations if r.engine_id not in outcome.evict]
        kept.append(Reservation("new", outcome.placed.gpus, outcome.placed.per_gpu_bytes))
        reserved = reserved_by_gpu(kept)
        for gpu in instance.view.gpus:
            assert available_bytes(gpu, reserved.get(gpu.index, 0), instance.view.headroom) >= 0
        assert len(set(outcome.placed.gpus)) == instance.count
        assert not set(outcome.placed.gpus) & instance.starting
        assert outcome.placed == placed_without(instance, outcome.evict)


@settings(max_examples=250, deadline=None)
@given(instances(), st.sampled_from([None, 0]))
def test_the_evicted_set_is_minimal(instance, max_steps):
    outcome = decide(instance, max_steps)

    if isinstance(outcome, Eviction):
        for size in range(len(outcome.evict)):
            for subset in itertools.combinations(outcome.evict, size):
                assert not fits_without(instance, subset), subset


@settings(max_examples=250, deadline=None)
@given(instances(), st.sampled_from([None, 0]))
def test_finds_an_eviction_whenever_one_exists(instance, max_steps):
    outcome = decide(instance, max_steps)
    waiting = (
        isinstance(placed_without(instance, ()), NotPlaced) and placed_without(instance, ()).busy
    )

    best = brute_force_best(instance)
    if best is not None and not waiting:
        assert isinstance(outcome, Eviction)
    if best is None:
        assert isinstance(outcome, NotPlaced)


@settings(max_examples=250, deadline=None)
@given(instances())
def test_the_search_finds_the_fewest_then_least_recently_used(instance):
    outcome = decide(instance)
    first = placed_without(instance, ())

    if isinstance(first, Placed):
        assert outcome == Eviction((), first)
    elif not first.busy and (best := brute_force_best(instance)) is not None:
        assert isinstance(outcome, Eviction)
        assert outcome.exact
        assert outcome.evict == best


@pytest.mark.parametrize("max_steps", [None, 0])
def test_fifty_engines_on_eight_gpus_give_valid_minimal_answers(max_steps):
    # The bench's size: with the default budget or none at all, the answer must hold.
    rng = random.Random(14)
    gpu_view = view(*[80] * 8, headroom=0.95)
    for _ in range(20):
        reservations: list[Reservation] = []
        while len(reservations) < 50:
            count = rng.choice((1, 1, 2, 4))
            need = int(rng.uniform(1, 12) * GIB)
            placed = place(count, need, gpu_view.gpus, reservations, 0.95)
            if not isinstance(placed, Placed):
                placed = place(1, GIB // 4, gpu_view.gpus, reservations, 0.95)
            assert isinstance(placed, Placed)
            engine_id = f"e{len(reservations)}"
            reservations.append(Reservation(engine_id, placed.gpus, placed.per_gpu_bytes))
        candidates = tuple(
            EvictionCandidate(r.engine_id, rng.random() > 0.3, rng.random() < 0.1, rng.random())
            for r in reservations
        )
        count, need = rng.choice((1, 2, 4, 8)), int(rng.uniform(10, 40) * GIB)
        instance = Instance(gpu_view, tuple(reservations), candidates, count, need, frozenset())
        outcome = decide(instance, max_steps)
        if isinstance(outcome, Eviction):
            assert fits_without(instance, outcome.evict)
            for name in outcome.evict:
                assert not fits_without(instance, [e for e in outcome.evict if e != name])
        else:
            assert not fits_without(instance, [c.engine_id for c in pool_of(instance)])
