"""The loop's published state: one immutable view of it for readers outside the loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.estimate import MemoryEstimate
from sagellmd.gpu.inventory import GpuInventory
from sagellmd.gpu.placement import GpuView
from sagellmd.instance import Instance


@dataclass(frozen=True)
class Snapshot:
    """What the loop knew at `version` (event-hub version, passes): the desired engines,
    what runs, the GPUs and the memory estimates. The API reads this, never the loop."""

    version: tuple[int, int]
    desired: tuple[DesiredEngine, ...]
    instances: Mapping[str, Instance]
    inventory: GpuInventory
    gpu_view: GpuView
    estimates: Mapping[str, MemoryEstimate | str]
    passes: int
    last_pass_at: float | None

    def desired_engine(self, engine_id: str) -> DesiredEngine | None:
        return next((engine for engine in self.desired if engine.id == engine_id), None)


def take_snapshot(
    version: tuple[int, int],
    desired: list[DesiredEngine],
    instances: Mapping[str, Instance],
    inventory: GpuInventory,
    gpu_view: GpuView,
    estimates: Mapping[str, MemoryEstimate | str],
    last_pass_at: float | None,
) -> Snapshot:
    """A snapshot with copies of the loop's mutable parts, so later changes do not show."""
    return Snapshot(
        version,
        tuple(desired),
        MappingProxyType(dict(instances)),
        inventory,
        gpu_view,
        MappingProxyType(dict(estimates)),
        version[1],
        last_pass_at,
    )
