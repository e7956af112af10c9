"""Starts of engines that span cluster nodes (vLLM's Ray executor): when, and on which
nodes' GPUs, as gpu/node_spread.py places them. Pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from sagellmd.gpu.cluster_placement import busy_by_node, node_reservations, node_views
from sagellmd.gpu.node_placement import spans_nodes as engine_spans_nodes
from sagellmd.gpu.node_spread import place_across
from sagellmd.gpu.node_view import EngineNeed, SpreadPlaced
from sagellmd.gpu.placement import GpuView, NotPlaced, Reservation
from sagellmd.reconcile.actions import Start
from sagellmd.spec import EngineSpec

CLUSTER_NEEDED = (
    "nodes: {nodes} spans cluster nodes, and this daemon runs on one machine: add cluster:"
    " to config.yaml (docs/multi-node.md) or remove nodes"
)


def spans_nodes(spec: EngineSpec, view: GpuView) -> bool:
    """`nodes: N` above 1, or more GPUs than any single node has (node_placement.py)."""
    need = EngineNeed("", 0, spec.tensor_parallel, spec.pipeline_parallel, spec.nodes)
    if not view.nodes:
        return need.nodes is not None and need.nodes >= 2
    return engine_spans_nodes(need, node_views(view.nodes, view.gpus))


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
    outcome = place_across(
        EngineNeed(
            action.engine_id, need, spec.tensor_parallel, spec.pipeline_parallel, spec.nodes
        ),
        node_views(view.nodes, view.gpus),
        node_reservations(reservations, view.nodes),
        view.headroom,
        busy_by_node(busy, view.nodes),
    )
    if not isinstance(outcome, SpreadPlaced):
        return outcome
    offsets = {node.name: node.offset for node in view.nodes}
    gpus = tuple(offsets[share.node] + gpu for share in outcome.shares for gpu in share.gpus)
    # Held whole: Ray, not sagellm, gives each worker its GPU, so no other engine may count
    # on room beside it.
    whole = max(gpu.total_bytes for gpu in view.gpus if gpu.index in gpus)
    return replace(action, gpus=gpus, gpu_bytes=whole, spread=outcome)
