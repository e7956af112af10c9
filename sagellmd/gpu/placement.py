"""Placement: which GPUs an engine gets, best fit, never over headroom. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class GpuCapacity:
    """One GPU as placement sees it: its size and what processes we did not start use."""

    index: int
    total_bytes: int
    foreign_bytes: int = 0


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


def place(
    count: int,
    per_gpu_bytes: int,
    gpus: Collection[GpuCapacity],
    reservations: Iterable[Reservation],
    headroom: float,
    busy: Collection[int] = (),
) -> Placed | NotPlaced:
    """The `count` distinct GPUs with the least room that still fits (best fit).

    GPUs in `busy` (an engine is starting on them) are used only if nothing else fits,
    and then the answer is to wait.
    """
    reserved = reserved_by_gpu(reservations)
    room = {gpu.index: available_bytes(gpu, reserved.get(gpu.index, 0), headroom) for gpu in gpus}
    fitting = sorted((room[g.index], g.index) for g in gpus if room[g.index] >= per_gpu_bytes)
    idle = [index for _, index in fitting if index not in busy]
    if len(idle) >= count:
        return Placed(tuple(sorted(idle[:count])), per_gpu_bytes)
    need = describe_need(count, per_gpu_bytes)
    if len(fitting) >= count:
        waiting = ", ".join(f"GPU{index}" for _, index in fitting if index in busy)
        return NotPlaced(f"{need}; waiting for the engine starting on {waiting}", busy=True)
    if not gpus:
        return NotPlaced(f"{need}; no GPUs")
    free = ", ".join(
        f"GPU{g.index} {_gb(max(0, room[g.index]))} free"
        for g in sorted(gpus, key=lambda g: g.index)
    )
    return NotPlaced(f"{need}; {free}")


def memory_fraction(per_gpu_bytes: int, gpus: Iterable[GpuCapacity]) -> float:
    """vLLM's --gpu-memory-utilization: reserved / total, on the largest of the GPUs.

    One fraction applies to every GPU of the engine; taking the largest total keeps
    the engine within its reservation on each of them.
    """
    largest = max(gpu.total_bytes for gpu in gpus)
    return per_gpu_bytes / largest
