"""JSON shape of the GPU inventory with its reservations, for /v1/gpus and /v1/status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagellmd.gpu.inventory import GIB, GpuInventory
from sagellmd.gpu.placement import GpuView, available_bytes
from sagellmd.instance import Instance


def _gb(value: int) -> float:
    return round(value / GIB, 2)


def gpus_document(
    inventory: GpuInventory, view: GpuView, instances: Mapping[str, Instance]
) -> dict[str, Any]:
    capacities = {gpu.index: gpu for gpu in view.gpus}
    devices = []
    for device in inventory.devices:
        holders = [
            {"engine": instance.engine_id, "gb": _gb(instance.gpu_bytes)}
            for instance in sorted(instances.values(), key=lambda i: i.engine_id)
            if instance.holds_gpus and device.index in instance.gpus
        ]
        reserved = sum(
            instance.gpu_bytes
            for instance in instances.values()
            if instance.holds_gpus and device.index in instance.gpus
        )
        capacity = capacities.get(device.index)
        foreign_bytes = capacity.foreign_bytes if capacity else 0
        room = available_bytes(capacity, reserved, view.headroom) if capacity else 0
        devices.append(
            {
                "index": device.index,
                "uuid": device.uuid,
                "name": device.name,
                "simulated": device.simulated,
                "total_gb": _gb(device.total_bytes),
                "used_gb": _gb(device.used_bytes),
                "free_gb": _gb(device.free_bytes),
                "utilization": device.utilization,
                "reserved_gb": _gb(reserved),
                "reservations": holders,
                "foreign_gb": _gb(foreign_bytes),
                "available_gb": _gb(max(0, room)),
                "processes": [{"pid": p.pid, "gb": _gb(p.used_bytes)} for p in device.processes],
            }
        )
    return {
        "mode": inventory.mode,
        "simulated": inventory.simulated,
        "message": inventory.message,
        "headroom": view.headroom,
        "errors": list(inventory.errors),
        "devices": devices,
    }
