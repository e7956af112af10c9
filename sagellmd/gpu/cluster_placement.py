"""Placement on a cluster, over the loop's one numbering of every node's GPUs. Pure.

The view numbers each node's GPUs from its `NodeGpus.offset`; node_placement.py and
node_spread.py place in each node's own numbering (so reasons name GPUs as the node knows
them). This module translates between the two.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

from sagellmd.gpu.node_placement import place_single
from sagellmd.gpu.node_view import NodeReservation, NodeView
from sagellmd.gpu.placement import (
    GpuCapacity,
    GpuView,
    NodeGpus,
    NotPlaced,
    Placed,
    Reservation,
)


def node_of(index: int, nodes: Sequence[NodeGpus]) -> NodeGpus | None:
    return next((node for node in nodes if node.holds(index)), None)


def locate(gpus: Iterable[int], nodes: Sequence[NodeGpus]) -> tuple[str | None, tuple[int, ...]]:
    """The node of view indices `gpus` (all on one) and that node's own indices."""
    found: str | None = None
    local = []
    for index in gpus:
        node = node_of(index, nodes)
        if node is None:
            raise ValueError(f"GPU index {index} is on no node of the view")
        if found is not None and node.name != found:
            raise ValueError(f"GPUs {tuple(gpus)} straddle nodes {found} and {node.name}")
        found = node.name
        local.append(index - node.offset)
    return found, tuple(local)


def node_views(nodes: Sequence[NodeGpus], gpus: Iterable[GpuCapacity]) -> list[NodeView]:
    """Each node with its GPUs in its own numbering; `note` says why it takes none."""
    gpus = list(gpus)
    return [
        NodeView(
            node.name,
            tuple(
                replace(gpu, index=gpu.index - node.offset) for gpu in gpus if node.holds(gpu.index)
            ),
            node.note,
        )
        for node in nodes
    ]


def node_reservations(
    reservations: Iterable[Reservation], nodes: Sequence[NodeGpus]
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


def busy_by_node(busy: Collection[int], nodes: Sequence[NodeGpus]) -> dict[str, set[int]]:
    return {node.name: {gpu - node.offset for gpu in busy if node.holds(gpu)} for node in nodes}


def place_on_a_node(
    count: int,
    per_gpu_bytes: int,
    gpus: Collection[GpuCapacity],
    reservations: Iterable[Reservation],
    view: GpuView,
    busy: Collection[int],
) -> Placed | NotPlaced:
    """All `count` GPUs on one node, best fit across nodes (node_placement.place_single),
    among `gpus` (those the start may get); a reason that names every node otherwise."""
    nodes = view.nodes
    outcome = place_single(
        count,
        per_gpu_bytes,
        node_views(nodes, gpus),
        node_reservations(reservations, nodes),
        view.headroom,
        busy_by_node(busy, nodes),
    )
    if isinstance(outcome, NotPlaced):
        return outcome
    offset = next(node.offset for node in nodes if node.name == outcome.node)
    return Placed(tuple(offset + gpu for gpu in outcome.gpus), outcome.per_gpu_bytes)
