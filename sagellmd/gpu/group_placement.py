"""Placement of a disaggregated engine's instances: each on GPUs no other instance of its
group uses (anti-affinity), and the instances being started all placed or none. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sagellmd.gpu.placement import GpuCapacity, NotPlaced, Placed, Reservation, place


@dataclass(frozen=True)
class GroupStart:
    """One instance of the group to start now: how many GPUs and bytes on each."""

    engine_id: str
    count: int
    per_gpu_bytes: int


def place_group(
    group: str,
    starts: Sequence[GroupStart],
    gpus: Collection[GpuCapacity],
    reservations: Sequence[Reservation],
    headroom: float,
    busy: Collection[int] = (),
    held: Mapping[str, Collection[int]] | None = None,
) -> dict[str, Placed] | NotPlaced:
    """GPUs for every start of `group`, or one reason none of them may start.

    `held` maps the group's other instances (running, or holding their reservation between
    restarts) to their GPUs: no start may share them. `reservations` are everything else
    held on the GPUs, the group's own instances included. The starts are placed one after
    another, largest first (best fit each, as `place`), so a large instance is not left
    without a GPU a small one took. Busy GPUs (another engine starting) make the whole group
    wait, like a single engine: `NotPlaced(busy=True)`.
    """
    taken = {gpu for member_gpus in (held or {}).values() for gpu in member_gpus}
    planned: list[Reservation] = []
    placed: dict[str, Placed] = {}
    order = sorted(starts, key=lambda s: (-s.count, -s.per_gpu_bytes, s.engine_id))
    for start in order:
        free = [gpu for gpu in gpus if gpu.index not in taken]
        outcome = place(
            start.count,
            start.per_gpu_bytes,
            free,
            [*reservations, *planned],
            headroom,
            busy,
        )
        if not isinstance(outcome, Placed):
            return _group_reason(group, start, outcome, len(gpus), len(free))
        placed[start.engine_id] = outcome
        planned.append(Reservation(start.engine_id, outcome.gpus, outcome.per_gpu_bytes))
        taken.update(outcome.gpus)
    return placed


def _group_reason(
    group: str, start: GroupStart, outcome: NotPlaced, total: int, free: int
) -> NotPlaced:
    # Every instance of the group shows this one message: say which one does not fit.
    if free < start.count:
        why = (
            f"{start.engine_id} needs {start.count} GPU{'s' if start.count != 1 else ''} no"
            f" other instance of {group} uses; {free} of {total} left"
        )
    else:
        why = f"{start.engine_id} {outcome.message}"
    return NotPlaced(
        f"{group} (prefill and decode instances never share a GPU) waits as one unit: {why}",
        busy=outcome.busy,
    )
