"""JSON shape of the cluster's nodes, for /v1/nodes, /v1/status and /v1/gpus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sagellmd.api.gpu_views import gpus_document
from sagellmd.gpu.accounting import capacities
from sagellmd.gpu.placement import GpuView
from sagellmd.instance import Instance
from sagellmd.store.timestamps import iso

if TYPE_CHECKING:
    from sagellmd.cluster.host import ClusterHost, NodeStatus


def _devices(status: NodeStatus, view: GpuView, instances: Mapping[str, Instance]) -> list[Any]:
    if status.local or status.inventory is None:
        return []
    mine = {key: i for key, i in instances.items() if i.node == status.node.name}
    local_view = GpuView(capacities(status.inventory, set(status.our_pids)), view.headroom)
    return gpus_document(status.inventory, local_view, mine)["devices"]


def node_entry(
    status: NodeStatus,
    view: GpuView,
    instances: Mapping[str, Instance],
    local_devices: list[Any],
) -> dict[str, Any]:
    name = status.node.name
    engines = sorted(
        key
        for key, instance in instances.items()
        if (instance.node or None) == (None if status.local else name) and instance.pid is not None
    )
    about = status.about or {}
    return {
        "name": name,
        "address": status.node.address,
        "local": status.local,
        "alive": status.node.alive,
        "dead_since": iso(status.dead_since) if status.dead_since else None,
        "usable": status.usable,
        "suspect": status.suspect,
        "ray_node_id": status.node.ray_node_id,
        "ray_gpus": status.node.ray_gpus,
        "gpu_setting": status.node.gpus,
        "gpus": local_devices if status.local else _devices(status, view, instances),
        "agent": {"version": about.get("sagellm"), "pid": about.get("pid")} if about else None,
        "engines": engines,
        "message": status.message,
    }


def nodes_document(
    host: ClusterHost | None,
    view: GpuView,
    instances: Mapping[str, Instance],
    local_devices: list[Any],
) -> list[dict[str, Any]]:
    """Every node Ray knows of, the daemon's first; empty without a cluster."""
    if host is None:
        return []
    ordered = sorted(host.nodes.values(), key=lambda status: (not status.local, status.node.name))
    return [node_entry(status, view, instances, local_devices) for status in ordered]
