"""Starts of engines that span cluster nodes (vLLM's Ray executor): when, and on which
nodes' GPUs, as gpu/node_spread.py places them. Pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from sagellmd.gpu.node_spread import place_across
from sagellmd.gpu.node_view import EngineNeed, NodeReservation, NodeView, SpreadPlaced
from sagellmd.gpu.placement import GpuView, NodeGpus, NotPlaced, Reservation
from sagellmd.reconcile.actions import Start
from sagellmd.spec import EngineSpec

CLUSTER_NEEDED = (
    "nodes: {nodes} spans cluster nodes, and this daemon runs on one machine: add cluster:"
    " to config.yaml (docs/multi-node.md) or remove nodes"
)


def spans_nodes(spec: EngineSpec, view: GpuView) -> bool:
    """`nodes: N` above 1, or more GPUs than any single node has."""
    if spec.nodes is not None:
        return spec.nodes > 1
    if not view.nodes:
        return False
    most = max((node.count for node in view.nodes if not node.note), default=0)
    return spec.tensor_parallel * spec.pipeline_parallel > most


def _node_views(view: GpuView) -> list[NodeView]:
    return [
        NodeView(
            node.name,
            tuple(
                replace(gpu, index=gpu.index - node.offset)
                for gpu in view.gpus
                if node.holds(gpu.index)
            ),
            node.note,
        )
        for node in view.nodes
    ]


def _node_reservations(
    reservations: Sequence[Reservation], nodes: Sequence[NodeGpus]
) -> list[NodeReservation]:
    found = []
    for reservation in reservations:
        for node in nodes:
            local = tuple(gpu - node.offset for gpu in reservation.gpus if node.holds(gpu))
            if local:
                found.append(
                    NodeReservation(
                        reservation.engine_id, node.name, local, reservation.per_gpu_bytes
                    )
                )
    return found


def place_spread(
    action: Start,
    need: int,
    view: GpuView,
    reservations: Sequence[Reservation],
    busy: Collection[int],
) -> Start | NotPlaced:
    """The start with the nodes and GPUs it spans, or why it cannot start now."""
    spec = action.engine.spec
    if not view.nodes:
        return NotPlaced(CLUSTER_NEEDED.format(nodes=spec.nodes))
    busy_by_node = {
        node.name: {gpu - node.offset for gpu in busy if node.holds(gpu)} for node in view.nodes
    }
    outcome = place_across(
        EngineNeed(
            action.engine_id, need, spec.tensor_parallel, spec.pipeline_parallel, spec.nodes
        ),
        _node_views(view),
        _node_reservations(reservations, view.nodes),
        view.headroom,
        busy_by_node,
    )
    if not isinstance(outcome, SpreadPlaced):
        return outcome
    offsets = {node.name: node.offset for node in view.nodes}
    gpus = tuple(offsets[share.node] + gpu for share in outcome.shares for gpu in share.gpus)
    # Held whole: Ray, not sagellm, gives each worker its GPU, so no other engine may count
    # on room beside it.
    whole = max(gpu.total_bytes for gpu in view.gpus if gpu.index in gpus)
    return replace(action, gpus=gpus, gpu_bytes=whole, spread=outcome)
