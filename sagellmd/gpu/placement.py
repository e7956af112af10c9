"""Placement: which GPUs an engine gets, best fit, never over headroom. Pure."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

GIB = 1024**3
# Sets of mixed-size GPUs tried for one engine; a workstation has a handful of GPUs.
MAX_MIXED_SETS = 5000


@dataclass(frozen=True)
class GpuCapacity:
    """One GPU as placement sees it: its size and what processes we did not start use."""

    index: int
    total_bytes: int
    foreign_bytes: int = 0


@dataclass(frozen=True)
class NodeGpus:
    """One cluster node's GPUs in a view: indices `offset` .. `offset + count - 1` are its
    GPUs 0 .. count - 1; `note` says why it offers none ("dead", "no GPUs (...)")."""

    name: str
    offset: int
    count: int
    note: str = ""

    def holds(self, index: int) -> bool:
        return self.offset <= index < self.offset + self.count


@dataclass(frozen=True)
class GpuView:
    """What placement needs to know: capacities, headroom, and each engine's per-GPU need.

    `needs` maps an engine id to its per-GPU bytes, or to a message saying why there
    is no estimate. `message` describes the inventory ("no GPUs (NVML unavailable: ...)").
    """

    gpus: tuple[GpuCapacity, ...]
    headroom: float = 0.95
    message: str = ""
    needs: Mapping[str, int | str] = field(default_factory=dict)
    # On a cluster: the nodes, whose GPUs no single engine straddles (empty: one machine).
    nodes: tuple[NodeGpus, ...] = ()


@dataclass(frozen=True)
class Reservation:
    engine_id: str
    gpus: tuple[int, ...]
    per_gpu_bytes: int


@dataclass(frozen=True)
class Placed:
    gpus: tuple[int, ...]
    per_gpu_bytes: int


@dataclass(frozen=True)
class NotPlaced:
    """No fit now; `busy` means it would fit once a start on a shared GPU finishes."""

    message: str
    busy: bool = False


def reserved_by_gpu(reservations: Iterable[Reservation]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for reservation in reservations:
        for gpu in reservation.gpus:
            totals[gpu] = totals.get(gpu, 0) + reservation.per_gpu_bytes
    return totals


def available_bytes(gpu: GpuCapacity, reserved: int, headroom: float) -> int:
    """What a new reservation may take on this GPU."""
    return int(gpu.total_bytes * headroom) - reserved - gpu.foreign_bytes


def _gb(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def describe_need(count: int, per_gpu_bytes: int) -> str:
    return f"needs {count} GPU{'s' if count != 1 else ''} x {_gb(per_gpu_bytes)}"


def group_bytes(per_gpu_bytes: int, gpus: Collection[GpuCapacity]) -> int:
    """What to reserve on each GPU of one engine so that it gets `per_gpu_bytes` on each.

    vLLM takes one --gpu-memory-utilization for all its GPUs, a fraction of each one's
    total: on mixed sizes the fraction that gives the smallest GPU its bytes makes the
    larger ones take more, and that is what they must have reserved.
    """
    totals = [gpu.total_bytes for gpu in gpus]
    if not totals or min(totals) == max(totals):
        return per_gpu_bytes
    return math.ceil(per_gpu_bytes * max(totals) / min(totals))


def place(
    count: int,
    per_gpu_bytes: int,
    gpus: Collection[GpuCapacity],
    reservations: Iterable[Reservation],
    headroom: float,
    busy: Collection[int] = (),
) -> Placed | NotPlaced:
    """The `count` distinct GPUs with the least room that still fits (best fit).

    GPUs of one size are preferred for a multi-GPU engine (see `group_bytes`); GPUs in
    `busy` (an engine is starting on them) are used only if nothing else fits, and then
    the answer is to wait.
    """
    reserved = reserved_by_gpu(reservations)
    room = {gpu.index: available_bytes(gpu, reserved.get(gpu.index, 0), headroom) for gpu in gpus}
    by_index = {gpu.index: gpu for gpu in gpus}
    fitting = sorted((room[g.index], g.index) for g in gpus if room[g.index] >= per_gpu_bytes)
    idle = [index for _, index in fitting if index not in busy]
    chosen = _choose(count, per_gpu_bytes, idle, by_index, room)
    if chosen is not None:
        return Placed(
            tuple(sorted(chosen)), group_bytes(per_gpu_bytes, [by_index[i] for i in chosen])
        )
    need = describe_need(count, per_gpu_bytes)
    if _choose(count, per_gpu_bytes, [i for _, i in fitting], by_index, room) is not None:
        waiting = ", ".join(f"GPU{index}" for _, index in fitting if index in busy)
        return NotPlaced(f"{need}; waiting for the engine starting on {waiting}", busy=True)
    if not gpus:
        return NotPlaced(f"{need}; no GPUs")
    free = ", ".join(
        f"GPU{g.index} {_gb(max(0, room[g.index]))} free"
        for g in sorted(gpus, key=lambda g: g.index)
    )
    if len(fitting) >= count:
        free += " (GPUs of different sizes: the larger ones need more, as vLLM takes one fraction)"
    return NotPlaced(f"{need}; {free}")


def _choose(
    count: int,
    per_gpu_bytes: int,
    candidates: list[int],
    by_index: dict[int, GpuCapacity],
    room: dict[int, int],
) -> list[int] | None:
    """Best fit among `candidates` (sorted by room): one size first, then mixed sizes."""
    if len(candidates) < count:
        return None
    if count == 1:
        return candidates[:1]
    same_size: list[list[int]] = []
    for total in {by_index[i].total_bytes for i in candidates}:
        group = [i for i in candidates if by_index[i].total_bytes == total]
        if len(group) >= count:
            same_size.append(group[:count])
    if same_size:
        return min(same_size, key=lambda group: (sum(room[i] for i in group), group))
    feasible = (
        list(group)
        for group in itertools.islice(itertools.combinations(candidates, count), MAX_MIXED_SETS)
        if all(room[i] >= group_bytes(per_gpu_bytes, [by_index[j] for j in group]) for i in group)
    )
    return min(feasible, key=lambda group: (sum(room[i] for i in group), group), default=None)


def memory_fraction(per_gpu_bytes: int, gpus: Iterable[GpuCapacity]) -> float:
    """vLLM's --gpu-memory-utilization: reserved / total, on the largest of the GPUs.

    One fraction applies to every GPU of the engine. Placement reserves `group_bytes` on
    each, so this fraction gives the smallest GPU the engine's need and keeps every GPU
    within its reservation.
    """
    largest = max(gpu.total_bytes for gpu in gpus)
    return per_gpu_bytes / largest
