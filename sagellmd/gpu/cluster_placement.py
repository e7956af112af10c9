"""Placement on a cluster: an engine's GPUs all on one node, best fit across nodes. Pure.

The view numbers every node's GPUs into one index space (`NodeGpus.offset`); each node is
placed on by `place` in its own numbering, so reasons name GPUs as the node knows them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

from sagellmd.gpu.placement import (
    GpuCapacity,
    NodeGpus,
    NotPlaced,
    Placed,
    Reservation,
    available_bytes,
    describe_need,
    place,
    reserved_by_gpu,
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


def _local(
    node: NodeGpus,
    gpus: Collection[GpuCapacity],
    reservations: Iterable[Reservation],
    busy: Collection[int],
) -> tuple[list[GpuCapacity], list[Reservation], set[int]]:
    """The node's part of the inputs, renumbered from 0."""
    mine = [replace(gpu, index=gpu.index - node.offset) for gpu in gpus if node.holds(gpu.index)]
    held = [
        Reservation(
            r.engine_id, tuple(g - node.offset for g in r.gpus if node.holds(g)), r.per_gpu_bytes
        )
        for r in reservations
    ]
    return mine, [r for r in held if r.gpus], {g - node.offset for g in busy if node.holds(g)}


def place_on_a_node(
    count: int,
    per_gpu_bytes: int,
    gpus: Collection[GpuCapacity],
    reservations: Iterable[Reservation],
    headroom: float,
    busy: Collection[int],
    nodes: Sequence[NodeGpus],
) -> Placed | NotPlaced:
    """`place` on each node; of the nodes that fit, the one left with the least room on
    the GPUs it gives (best fit, as across GPUs), else a reason naming every node."""
    reservations = list(reservations)
    fits: list[tuple[int, int, Placed]] = []
    reasons: list[str] = []
    waiting = False
    need = describe_need(count, per_gpu_bytes)
    for order, node in enumerate(nodes):
        if node.note:
            reasons.append(f"{node.name}: {node.note}")
            continue
        mine, held, mine_busy = _local(node, gpus, reservations, busy)
        outcome = place(count, per_gpu_bytes, mine, held, headroom, mine_busy)
        if isinstance(outcome, Placed):
            reserved = reserved_by_gpu(held)
            by_index = {gpu.index: gpu for gpu in mine}
            room = sum(
                available_bytes(by_index[i], reserved.get(i, 0), headroom) for i in outcome.gpus
            )
            shifted = Placed(tuple(i + node.offset for i in outcome.gpus), outcome.per_gpu_bytes)
            fits.append((room, order, shifted))
            continue
        waiting = waiting or outcome.busy
        reasons.append(f"{node.name}: {outcome.message.removeprefix(need).lstrip('; ')}")
    if fits:
        return min(fits, key=lambda fit: (fit[0], fit[1]))[2]
    return NotPlaced(f"{need}; {'; '.join(reasons) or 'no nodes'}", busy=waiting)
