"""Owns the tests of sagellmd/gpu/placement.py: best fit, distinct GPUs, never over headroom."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sagellmd.gpu.placement import (
    GIB,
    GpuCapacity,
    NotPlaced,
    Placed,
    Reservation,
    available_bytes,
    describe_need,
    group_bytes,
    memory_fraction,
    place,
    reserved_by_gpu,
)


def gpus(*sizes_gib: float, foreign_gib: dict[int, float] | None = None) -> list[GpuCapacity]:
    foreign = foreign_gib or {}
    return [
        GpuCapacity(index, int(size * GIB), int(foreign.get(index, 0) * GIB))
        for index, size in enumerate(sizes_gib)
    ]


# -- best fit and distinct GPUs ------------------------------------------------------


def test_best_fit_picks_the_gpu_with_the_least_room_that_fits():
    # Rooms at headroom 1.0: 80, 24, 48, 16 GiB; 20 GiB fits all but GPU3.
    outcome = place(1, 20 * GIB, gpus(80, 24, 48, 16), [], headroom=1.0)

    assert outcome == Placed((1,), 20 * GIB)


def test_best_fit_counts_existing_reservations():
    # GPU0 80 GiB with 70 reserved has 10 left: the tightest fit for 8 GiB.
    reservations = [Reservation("big", (0,), 70 * GIB)]

    outcome = place(1, 8 * GIB, gpus(80, 24), reservations, headroom=1.0)

    assert outcome == Placed((0,), 8 * GIB)


def test_ties_go_to_the_lowest_index():
    assert place(1, GIB, gpus(80, 80, 80), [], 0.95) == Placed((0,), GIB)


def test_tensor_parallel_spans_distinct_gpus():
    outcome = place(4, 30 * GIB, gpus(80, 80, 80, 80, 80), [], 0.95)

    assert isinstance(outcome, Placed)
    assert len(set(outcome.gpus)) == 4
    assert outcome.gpus == (0, 1, 2, 3)


def test_tensor_parallel_takes_the_tightest_gpus_and_reports_them_sorted():
    # Four 80 GiB GPUs with rooms 80, 40, 24, 60; two GPUs x 20 GiB go to the 24 and the 40.
    capacity = [GpuCapacity(i, 80 * GIB, (80 - r) * GIB) for i, r in enumerate((80, 40, 24, 60))]
    outcome = place(2, 20 * GIB, capacity, [], headroom=1.0)

    assert outcome == Placed((1, 2), 20 * GIB)


def test_mixed_sizes_reserve_what_vllms_one_fraction_takes_on_each_gpu():
    # Sizes 80, 40, 24, 60, all free. With one fraction f for both GPUs, the engine gets
    # f x total on each; giving the smaller its 20 GiB makes the larger take more.
    outcome = place(2, 20 * GIB, gpus(80, 40, 24, 60), [], headroom=1.0)

    # 24 GiB pairs with nothing (the partner would need 20 x T / 24 > its room); the
    # tightest feasible pair is 40 + 60: 20 x 60 / 40 = 30 GiB on each.
    assert outcome == Placed((1, 3), 30 * GIB)
    fraction = memory_fraction(outcome.per_gpu_bytes, [gpus(80, 40, 24, 60)[i] for i in (1, 3)])
    for total in (40, 60):
        assert 20 * GIB <= fraction * total * GIB <= outcome.per_gpu_bytes


def test_same_size_gpus_are_preferred_for_one_engine():
    outcome = place(2, 10 * GIB, gpus(24, 80, 24), [], headroom=1.0)

    assert outcome == Placed((0, 2), 10 * GIB)


def test_tensor_parallel_never_puts_two_shards_on_one_gpu():
    # One 80 GiB GPU has room for two 30 GiB shards, but shards need distinct GPUs.
    outcome = place(2, 30 * GIB, gpus(80), [], 0.95)

    assert isinstance(outcome, NotPlaced)
    assert not outcome.busy
    assert outcome.message.startswith("needs 2 GPUs x 30.0 GiB; ")


# -- never overcommit ----------------------------------------------------------------


def test_never_overcommits_a_gpu():
    reservations = [Reservation("a", (0,), 40 * GIB), Reservation("b", (0,), 30 * GIB)]

    outcome = place(1, 10 * GIB, gpus(80), reservations, headroom=1.0)
    tight = place(1, 10 * GIB + 1, gpus(80), reservations, headroom=1.0)

    assert outcome == Placed((0,), 10 * GIB)  # exactly full is allowed
    assert isinstance(tight, NotPlaced)


def test_headroom_is_respected():
    # 0.95 x 80 GiB = 76 GiB: 76 fits, one byte more does not.
    limit = int(80 * GIB * 0.95)

    assert place(1, limit, gpus(80), [], 0.95) == Placed((0,), limit)
    assert isinstance(place(1, limit + 1, gpus(80), [], 0.95), NotPlaced)
    assert isinstance(place(1, 60 * GIB, gpus(80), [], 0.5), NotPlaced)


def test_foreign_bytes_are_counted():
    capacity = gpus(80, 80, foreign_gib={0: 50})

    outcome = place(1, 30 * GIB, capacity, [], headroom=1.0)
    full = place(2, 31 * GIB, capacity, [], headroom=1.0)

    # GPU0 has 30 GiB left after the foreign 50: the tighter fit.
    assert outcome == Placed((0,), 30 * GIB)
    assert isinstance(full, NotPlaced)
    assert "GPU0 30.0 GiB free, GPU1 80.0 GiB free" in full.message


def test_available_bytes_subtracts_reservations_and_foreign_from_headroom():
    gpu = GpuCapacity(0, 80 * GIB, 10 * GIB)

    assert available_bytes(gpu, 20 * GIB, 0.5) == 40 * GIB - 30 * GIB
    assert available_bytes(gpu, 50 * GIB, 0.5) < 0


def test_reserved_by_gpu_adds_up_per_gpu():
    reservations = [
        Reservation("a", (0, 1), 10),
        Reservation("b", (1,), 5),
        Reservation("c", (3,), 7),
    ]

    assert reserved_by_gpu(reservations) == {0: 10, 1: 15, 3: 7}


# -- busy GPUs: one start at a time ---------------------------------------------------


def test_busy_gpus_are_avoided_when_another_fits():
    # GPU0 is the best fit but an engine is starting on it.
    outcome = place(1, 20 * GIB, gpus(24, 80), [], headroom=1.0, busy={0})

    assert outcome == Placed((1,), 20 * GIB)


def test_only_busy_gpus_fit_means_wait():
    outcome = place(1, 20 * GIB, gpus(24, 80), [], headroom=1.0, busy={0, 1})

    assert outcome == NotPlaced(
        "needs 1 GPU x 20.0 GiB; waiting for the engine starting on GPU0, GPU1", busy=True
    )


def test_wait_names_only_the_busy_gpus_that_would_fit():
    # GPU1 fits and is idle, GPU2 fits but is busy; tp=2 needs both, GPU0 is too small.
    outcome = place(2, 20 * GIB, gpus(16, 80, 80), [], headroom=1.0, busy={0, 2})

    assert outcome == NotPlaced(
        "needs 2 GPUs x 20.0 GiB; waiting for the engine starting on GPU2", busy=True
    )


def test_busy_but_too_small_is_not_a_reason_to_wait():
    outcome = place(1, 40 * GIB, gpus(24, 24), [], headroom=1.0, busy={0})

    assert isinstance(outcome, NotPlaced)
    assert not outcome.busy
    assert "waiting" not in outcome.message


# -- the pending message --------------------------------------------------------------


def test_pending_message_gives_the_numbers():
    # Headroom 0.5 of 80 GiB leaves 40 GiB; GPU0 also carries 30.9 GiB we did not start.
    capacity = gpus(80, 80, foreign_gib={0: 30.9})

    outcome = place(2, int(17.3 * GIB), capacity, [], headroom=0.5)

    assert outcome == NotPlaced(
        "needs 2 GPUs x 17.3 GiB; GPU0 9.1 GiB free, GPU1 40.0 GiB free", busy=False
    )


def test_pending_message_counts_reservations_and_never_goes_below_zero():
    reservations = [Reservation("a", (0,), 70 * GIB)]
    capacity = gpus(80, 24, foreign_gib={1: 30})

    outcome = place(1, 50 * GIB, capacity, reservations, headroom=0.95)

    assert isinstance(outcome, NotPlaced)
    assert outcome.message == "needs 1 GPU x 50.0 GiB; GPU0 6.0 GiB free, GPU1 0.0 GiB free"


def test_pending_message_lists_gpus_in_index_order():
    capacity = [GpuCapacity(1, 8 * GIB), GpuCapacity(0, 4 * GIB)]

    outcome = place(1, 10 * GIB, capacity, [], headroom=1.0)

    assert isinstance(outcome, NotPlaced)
    assert outcome.message.endswith("GPU0 4.0 GiB free, GPU1 8.0 GiB free")


def test_no_gpus_at_all():
    assert place(1, GIB, [], [], 0.95) == NotPlaced("needs 1 GPU x 1.0 GiB; no GPUs")


def test_describe_need():
    assert describe_need(1, int(7.5 * GIB)) == "needs 1 GPU x 7.5 GiB"
    assert describe_need(2, int(17.3 * GIB)) == "needs 2 GPUs x 17.3 GiB"


# -- vLLM's --gpu-memory-utilization --------------------------------------------------


def test_memory_fraction_is_reserved_over_total():
    assert memory_fraction(40 * GIB, gpus(80)) == 0.5
    assert memory_fraction(20 * GIB, gpus(80, 80)) == 0.25


def test_memory_fraction_on_mixed_gpus_gives_each_its_need_within_its_reservation():
    capacity = gpus(80, 24)
    reserved = group_bytes(12 * GIB, capacity)  # 40 GiB on each: 12 x 80 / 24

    fraction = memory_fraction(reserved, capacity)

    assert fraction == 12 / 24
    assert all(12 * GIB <= fraction * gpu.total_bytes <= reserved for gpu in capacity)


# -- property: any sequence of place and release ---------------------------------------


@st.composite
def scenarios(draw):
    sizes = draw(st.lists(st.integers(1, 160), min_size=1, max_size=8))
    capacity = [
        GpuCapacity(
            index,
            size * GIB,
            draw(st.integers(0, size * GIB)),
        )
        for index, size in enumerate(sizes)
    ]
    headroom = draw(st.floats(0.5, 1.0))
    operations = draw(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("place"),
                    st.integers(1, 4),
                    st.integers(1, 100 * GIB),
                    st.frozensets(st.integers(0, 7), max_size=3),
                ),
                st.tuples(st.just("release"), st.integers(0, 1000)),
            ),
            max_size=40,
        )
    )
    return capacity, headroom, operations


def _fits(count, per_gpu, candidates, reservations, headroom) -> bool:
    """Brute force: some `count` of `candidates` can hold what that set needs on each."""
    return any(
        all(room(g, reservations, headroom) >= group_bytes(per_gpu, group) for g in group)
        for group in itertools.combinations(candidates, count)
    )


def room(gpu: GpuCapacity, reservations: list[Reservation], headroom: float) -> int:
    return available_bytes(gpu, reserved_by_gpu(reservations).get(gpu.index, 0), headroom)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_place_and_release_never_overcommit_and_return_to_zero(scenario):
    capacity, headroom, operations = scenario
    by_index = {gpu.index: gpu for gpu in capacity}
    reservations: list[Reservation] = []
    for number, operation in enumerate(operations):
        if operation[0] == "place":
            _, count, per_gpu, busy = operation
            before = list(reservations)
            outcome = place(count, per_gpu, capacity, reservations, headroom, busy)
            fits = [gpu.index for gpu in capacity if room(gpu, before, headroom) >= per_gpu]
            idle = [index for index in fits if index not in busy]
            if isinstance(outcome, Placed):
                assert len(outcome.gpus) == len(set(outcome.gpus)) == count
                assert not set(outcome.gpus) & busy
                taken_gpus = [by_index[i] for i in outcome.gpus]
                assert outcome.per_gpu_bytes == group_bytes(per_gpu, taken_gpus) >= per_gpu
                assert all(room(g, before, headroom) >= outcome.per_gpu_bytes for g in taken_gpus)
                sizes = {g.total_bytes for g in taken_gpus}
                if len(sizes) == 1:
                    # Best fit among GPUs of that size: none left out has less room.
                    taken = max(room(g, before, headroom) for g in taken_gpus)
                    for index in set(idle) - set(outcome.gpus):
                        if by_index[index].total_bytes in sizes:
                            assert room(by_index[index], before, headroom) >= taken
                reservations.append(Reservation(f"e{number}", outcome.gpus, outcome.per_gpu_bytes))
            else:
                # Refused only when no set of idle GPUs fits now (one size, or mixed sizes
                # with what the larger ones need); it waits only for busy GPUs.
                assert not _fits(count, per_gpu, [by_index[i] for i in idle], before, headroom)
                assert outcome.busy == _fits(
                    count, per_gpu, [by_index[i] for i in fits], before, headroom
                )
        elif reservations:
            reservations.pop(operation[1] % len(reservations))
        reserved = reserved_by_gpu(reservations)
        for gpu in capacity:
            on_gpu = reserved.get(gpu.index, 0)
            assert on_gpu == 0 or on_gpu + gpu.foreign_bytes <= gpu.total_bytes * headroom
            # vLLM's fractions on one GPU never add up past the headroom either.
            fractions = sum(
                memory_fraction(r.per_gpu_bytes, [by_index[i] for i in r.gpus])
                for r in reservations
                if gpu.index in r.gpus
            )
            assert fractions <= headroom + 1e-9
    while reservations:
        reservations.pop()
    assert all(reserved_by_gpu(reservations).get(gpu.index, 0) == 0 for gpu in capacity)
    # With everything released, each GPU offers its whole headroom again (less foreign).
    for gpu in capacity:
        assert room(gpu, reservations, headroom) == int(gpu.total_bytes * headroom) - (
            gpu.foreign_bytes
        )
