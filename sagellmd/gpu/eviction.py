"""Eviction: which idle engines to stop so that a new engine fits on the GPUs. Pure.

The rules (issue 14): never a busy engine, never one that may not go idle; the fewest
engines that make room; among sets of that size the one that spares the most recently
used engines (the set whose newest member was used longest ago, then the next member);
no eviction when the engine fits already; the placement afterwards is the one `place`
gives, so it keeps the same headroom and best-fit rules. How the set is searched, within
a bounded time: sagellmd/gpu/eviction_search.py.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sagellmd.gpu.eviction_search import (
    MAX_SEARCH_STEPS,
    BudgetSpent,
    EvictionSearch,
    place_without,
)
from sagellmd.gpu.placement import (
    GpuView,
    NotPlaced,
    Placed,
    Reservation,
    describe_need,
    place,
)

# Holders named in a "cannot make room" message before "and N more".
MAX_NAMED_HOLDERS = 8


@dataclass(frozen=True)
class EvictionCandidate:
    """An engine holding GPU reservations, as eviction sees it.

    `evictable`: it may go idle (`start: on-demand` or `idle_s` set). `busy`: it has a
    request in flight or queued. `last_used`: when it last served one, on any clock the
    caller uses for all candidates (older goes first; ties by engine id).
    """

    engine_id: str
    evictable: bool
    busy: bool
    last_used: float


@dataclass(frozen=True)
class Eviction:
    """Stop (or put to sleep) `evict`, oldest first, then start the engine on `placed`.

    `exact` is False when the search budget ran out: the set is then minimal (no member
    can be spared) but a smaller one may exist.
    """

    evict: tuple[str, ...]
    placed: Placed
    exact: bool = True


def choose_evictions(
    count: int,
    per_gpu_bytes: int,
    view: GpuView,
    reservations: Sequence[Reservation],
    candidates: Iterable[EvictionCandidate],
    starting: Collection[int] = (),
    max_steps: int = MAX_SEARCH_STEPS,
) -> Eviction | NotPlaced:
    """The engines to evict so that `count` GPUs x `per_gpu_bytes` fit, and where it goes.

    `reservations` are every reservation held now, without the engine to place; the ones
    of engines not in `candidates` are never evicted. `starting` are GPUs an engine is
    starting on (see `place`). A NotPlaced with busy=True means: wait, do not evict.
    """
    outcome = place(count, per_gpu_bytes, view.gpus, reservations, view.headroom, starting)
    if isinstance(outcome, Placed):
        return Eviction((), outcome)
    if outcome.busy:
        return outcome
    held = {r.engine_id for r in reservations}
    by_id = {c.engine_id: c for c in candidates if c.engine_id in held}
    pool = sorted(
        (c for c in by_id.values() if c.evictable and not c.busy),
        key=lambda c: (c.last_used, c.engine_id),
    )
    evictable = {c.engine_id for c in pool}
    everything = place_without(count, per_gpu_bytes, view, reservations, evictable, starting)
    if not isinstance(everything, Placed):
        if everything.busy:
            return everything
        return NotPlaced(_cannot_make_room(count, per_gpu_bytes, view, reservations, by_id))
    ids = [c.engine_id for c in pool]
    search = EvictionSearch(count, per_gpu_bytes, view, reservations, ids, starting, max_steps)
    # Evicting the whole pool fits, so the greedy answer exists; the search improves on it.
    greedy = search.greedy()
    try:
        found, exact = search.best_below(greedy[0]), True
    except BudgetSpent:
        found, exact = None, False
    evict, placed = found or (search.names(greedy[0]), greedy[1])
    return Eviction(evict, placed, exact)


def _cannot_make_room(
    count: int,
    per_gpu_bytes: int,
    view: GpuView,
    reservations: Sequence[Reservation],
    by_id: dict[str, EvictionCandidate],
) -> str:
    need = describe_need(count, per_gpu_bytes)
    empty = place(count, per_gpu_bytes, view.gpus, [], view.headroom)
    if not isinstance(empty, Placed):
        return f"{empty.message}, even with no engine running"
    holders = []
    for engine_id in sorted({r.engine_id for r in reservations}):
        candidate = by_id.get(engine_id)
        if candidate is None:
            holders.append(f"{engine_id} (not idle-able)")
        elif not candidate.evictable:
            holders.append(f"{engine_id} (always-on)")
        elif candidate.busy:
            holders.append(f"{engine_id} (busy)")
    named = ", ".join(holders[:MAX_NAMED_HOLDERS])
    if len(holders) > MAX_NAMED_HOLDERS:
        named += f" and {len(holders) - MAX_NAMED_HOLDERS} more"
    return f"{need}; only busy or always-on engines hold the memory: {named}"
