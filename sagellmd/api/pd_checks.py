"""Declaration-time checks of disaggregated engines against this box: enough GPUs for the set
(disaggregation.check_gpu_count), once the inventory is known."""

from __future__ import annotations

from collections.abc import Mapping

from sagellmd.disaggregation import check_gpu_count
from sagellmd.gpu.inventory import GpuInventory
from sagellmd.spec import EngineSpec


def inventory_gpu_count(inventory: GpuInventory) -> int | None:
    """How many GPUs the box has, or None while that is unknown (NVML not answering)."""
    if inventory.mode == "nvml" and not inventory.devices:
        return None
    return len(inventory.devices)


def check_gpus_for_sets(specs: Mapping[str, EngineSpec], inventory: GpuInventory) -> None:
    """SpecError naming `<where>.disaggregated` for a set this box cannot hold at all.

    `specs` maps each spec's path in messages (`engines[0]`, an engine id) to the spec.
    """
    count = inventory_gpu_count(inventory)
    if count is None:
        return
    for where, spec in specs.items():
        if spec.disaggregated is not None:
            check_gpu_count(
                spec.disaggregated, count, f"{where}.disaggregated", spec.pipeline_parallel
            )
