"""The search for the best eviction set (see sagellmd/gpu/eviction.py for the rules). Pure.

Evictable engines are ranked by last use (oldest 0) and a set is given the mask with
those bits: the best set has the fewest members, then the smallest mask. A greedy answer
comes first: for each GPU, cover that GPU with its largest engines, then the GPU needing
the fewest more evictions, and so on until the engine fits, then drop every member that
is not needed, newest first; the best of these runs stands. Then an exact walk looks for
a better set: sets of k members in mask (colex) order, k = 1, 2, ... up to the greedy
answer's size, so the first set that fits is the best. A branch is cut when even its
best completion cannot fit: each GPU needs at least as many more engines as its largest
remaining contributions take to cover its deficit, and the `count` cheapest GPUs must be
covered. Only engines on GPUs that could ever fit take part. The walk has a budget of
bound checks; when it runs out, the greedy answer stands (minimal: no member can be
spared, but a smaller set may exist).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Sequence

from sagellmd.gpu.placement import (
    GpuView,
    NotPlaced,
    Placed,
    Reservation,
    available_bytes,
    group_bytes,
    place,
    reserved_by_gpu,
)

# Bound checks of the exact walk before the greedy answer stands; ~6 us each, so the walk
# costs at most ~2 ms on top of the greedy answer.
MAX_SEARCH_STEPS = 250


class BudgetSpent(Exception):
    """The exact walk used its budget of bound checks."""


def place_without(
    count: int,
    per_gpu_bytes: int,
    view: GpuView,
    reservations: Sequence[Reservation],
    evicted: Collection[str],
    starting: Collection[int],
) -> Placed | NotPlaced:
    """Where `place` puts the engine once the `evicted` engines' reservations are gone."""
    kept = [r for r in reservations if r.engine_id not in evicted]
    return place(count, per_gpu_bytes, view.gpus, kept, view.headroom, starting)


class EvictionSearch:
    """The greedy answer and the bounded walk of the module docstring, for one decision.

    `pool` are the engine ids that may be evicted, oldest first.
    """

    def __init__(
        self,
        count: int,
        per_gpu_bytes: int,
        view: GpuView,
        reservations: Sequence[Reservation],
        pool: Sequence[str],
        starting: Collection[int],
        max_steps: int,
    ) -> None:
        self.count, self.need, self.view = count, per_gpu_bytes, view
        self.reservations, self.starting = reservations, starting
        self.steps_left = max_steps
        pool_ids = set(pool)
        reserved = reserved_by_gpu(reservations)
        freeable = reserved_by_gpu(r for r in reservations if r.engine_id in pool_ids)
        # GPUs that could hold the engine once every pool engine on them is gone.
        self.room: list[int] = []
        self.sizes: list[int] = []
        position: dict[int, int] = {}
        for gpu in view.gpus:
            room = available_bytes(gpu, reserved.get(gpu.index, 0), view.headroom)
            if gpu.index not in starting and room + freeable.get(gpu.index, 0) >= per_gpu_bytes:
                position[gpu.index] = len(self.room)
                self.room.append(room)
                self.sizes.append(gpu.total_bytes)
        # Room that is enough on any GPU, whichever GPUs the engine is placed with.
        self.enough = group_bytes(per_gpu_bytes, [g for g in view.gpus if g.index in position])
        frees: dict[str, dict[int, int]] = {engine_id: {} for engine_id in pool}
        for reservation in reservations:
            on = frees.get(reservation.engine_id)
            if on is None:
                continue
            for gpu in reservation.gpus:
                if gpu in position:
                    on[position[gpu]] = on.get(position[gpu], 0) + reservation.per_gpu_bytes
        # Engines on no GPU that could hold the new one cannot help; the rest keep the
        # pool's order (oldest first). Their frees as (position, bytes).
        self.ids = [engine_id for engine_id in pool if frees[engine_id]]
        self.frees = [tuple(frees[engine_id].items()) for engine_id in self.ids]
        self.span = max((len(f) for f in self.frees), default=1) or 1
        size = len(self.room)
        # prefix[p][t]: what engines 0..t-1 free on p; top[p][i]: the i largest frees on p.
        self.prefix = [[0] * (len(self.ids) + 1) for _ in range(size)]
        # on_gpu[p]: (bytes, index) of the engines on p, largest first, then oldest.
        self.on_gpu: list[list[tuple[int, int]]] = [[] for _ in range(size)]
        for t, engine_frees in enumerate(self.frees):
            for p in range(size):
                self.prefix[p][t + 1] = self.prefix[p][t]
            for p, freed in engine_frees:
                self.prefix[p][t + 1] += freed
                self.on_gpu[p].append((freed, t))
        self.top = []
        for on in self.on_gpu:
            on.sort(key=lambda pair: (-pair[0], pair[1]))
            sums = [0]
            for value, _ in on:
                sums.append(sums[-1] + value)
            self.top.append(sums)

    def best_below(self, bound: list[int]) -> tuple[tuple[str, ...], Placed] | None:
        """The best set that beats `bound` (a set that fits), or None if there is none."""
        zero = [0] * len(self.room)
        limit = len(self.ids)
        for k in range(1, len(bound) + 1):
            if self._promising(zero, k, limit):
                found = self._walk(k, limit, zero, [])
                if found is not None:
                    chosen, placed = found
                    better = k < len(bound) or _mask(chosen) < _mask(bound)
                    return (self.names(chosen), placed) if better else None
        return None

    def _promising(self, freed: list[int], more: int, limit: int) -> bool:
        """Whether `more` engines among the first `limit` could still make it fit."""
        self.steps_left -= 1
        if self.steps_left < 0:
            raise BudgetSpent
        costs = []
        for p, room in enumerate(self.room):
            deficit = self.need - room - freed[p]
            if deficit <= 0:
                costs.append(0)
            elif self.prefix[p][limit] >= deficit:
                # The fewest engines that cover the deficit, counting the largest first.
                cost = bisect.bisect_left(self.top[p], deficit)
                if cost <= more:
                    costs.append(cost)
        if len(costs) < self.count:
            return False
        costs.sort()
        # Each of the `count` GPUs needs its own cover; an engine on several GPUs may
        # count for each of them.
        cheapest = costs[: self.count]
        return max(cheapest[-1], math.ceil(sum(cheapest) / self.span)) <= more

    def _walk(
        self, more: int, limit: int, freed: list[int], chosen: list[int]
    ) -> tuple[list[int], Placed] | None:
        if more == 0:
            if not self._fits(chosen, freed):
                return None
            placed = self._placed(chosen)
            return None if placed is None else (chosen, placed)
        # The newest member first, ascending: sets come in colex (mask) order.
        for top in range(more - 1, limit):
            # A member that frees memory only where there is enough already could be
            # left out, so no set of the fewest engines has it.
            if all(self.room[p] + freed[p] >= self.enough for p, _ in self.frees[top]):
                continue
            after = list(freed)
            for p, value in self.frees[top]:
                after[p] += value
            if self._promising(after, more - 1, top):
                found = self._walk(more - 1, top, after, [*chosen, top])
                if found is not None:
                    return found
        return None

    def _fits(self, chosen: list[int], freed: list[int]) -> bool:
        """Whether `place` finds GPUs once `freed` is freed (asks it only for mixed sizes)."""
        fitting: dict[int, int] = {}
        for p, room in enumerate(self.room):
            if room + freed[p] >= self.need:
                fitting[self.sizes[p]] = fitting.get(self.sizes[p], 0) + 1
        if any(n >= self.count for n in fitting.values()):
            return True
        if sum(fitting.values()) < self.count:
            return False
        return self._placed(chosen) is not None

    def _placed(self, chosen: Iterable[int]) -> Placed | None:
        evicted = {self.ids[i] for i in chosen}
        outcome = place_without(
            self.count, self.need, self.view, self.reservations, evicted, self.starting
        )
        return outcome if isinstance(outcome, Placed) else None

    def greedy(self) -> tuple[list[int], Placed]:
        """The best of one greedy run per GPU, each covering that GPU first.

        A run covers a GPU with its largest engines, then the GPU that needs the fewest
        more evictions, and so on until the engine fits; then it drops members, newest
        first, while it still fits, so no member of its answer can be spared.
        """
        best: list[int] | None = None
        for first in [None, *range(len(self.room))]:
            chosen = self._greedy_run(first)
            if best is None or (len(chosen), _mask(chosen)) < (len(best), _mask(best)):
                best = chosen
        assert best is not None
        placed = self._placed(best)
        assert placed is not None  # _fits agrees with place
        return best, placed

    def _greedy_run(self, first: int | None) -> list[int]:
        chosen: list[int] = []
        freed = [0] * len(self.room)
        while not self._fits(chosen, freed):
            # GPUs of mixed sizes need more than `need` on each (see `group_bytes`).
            cover = next(
                (
                    cover
                    for only in dict.fromkeys([first, None])
                    for target in (self.need, self.enough)
                    if (cover := self._cheapest_cover(chosen, freed, only, target))
                ),
                [],
            )
            first = None
            if not cover:
                # The whole pool fits, so the drop pass below makes this a minimal set.
                chosen = list(range(len(self.ids)))
                freed = [prefix[-1] for prefix in self.prefix]
                break
            for index in cover:
                chosen.append(index)
                for p, value in self.frees[index]:
                    freed[p] += value
        for index in sorted(chosen, reverse=True):
            rest = [i for i in chosen if i != index]
            without = list(freed)
            for p, value in self.frees[index]:
                without[p] -= value
            if self._fits(rest, without):
                chosen, freed = rest, without
        return sorted(chosen)

    def _cheapest_cover(
        self, chosen: list[int], freed: list[int], only: int | None, target: int
    ) -> list[int]:
        """The fewest more engines that give one more GPU `target` room, largest first."""
        best: list[int] = []
        taken = set(chosen)
        for p, room in enumerate(self.room):
            deficit = target - room - freed[p]
            if deficit <= 0 or (only is not None and p != only):
                continue
            cover = []
            for value, index in self.on_gpu[p]:
                if index in taken:
                    continue
                cover.append(index)
                deficit -= value
                if deficit <= 0:
                    break
            if deficit <= 0 and (not best or len(cover) < len(best)):
                best = cover
        return best

    def names(self, chosen: Iterable[int]) -> tuple[str, ...]:
        return tuple(self.ids[i] for i in sorted(chosen))


def _mask(chosen: Iterable[int]) -> int:
    return sum(1 << index for index in chosen)
