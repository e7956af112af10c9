"""Placement with a node dimension: one node when the engine fits on one, best fit across
nodes as across GPUs; across nodes (vLLM's Ray executor) when it fits on none or says
`nodes: N`. Never over headroom on any GPU of any node. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sagellmd.gpu.node_spread import place_across
from sagellmd.gpu.node_view import (
    EngineNeed,
    NodePlaced,
    NodeReservation,
    NodeView,
    SpreadPlaced,
    busy_on,
    by_node,
    describe_node_room,
    gpu_room,
    plain,
    whole_gpus,
)
from sagellmd.gpu.placement import NotPlaced, Placed, describe_need, place


def spans_nodes(need: EngineNeed, nodes: Sequence[NodeView]) -> bool:
    """True if the engine is to run across nodes: `nodes: N >= 2`, or it needs more GPUs
    than any usable node has (installed GPUs, not free ones: a full node is waited for).
    One GPU never spans: its reason is the one-node one ("a: no GPUs")."""
    if need.nodes is not None:
        return need.nodes >= 2
    if need.gpu_count == 1:
        return False
    usable = [node for node in nodes if node.usable]
    return bool(usable) and all(len(node.gpus) < need.gpu_count for node in usable)


def place_on_nodes(
    need: EngineNeed,
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]] | None = None,
) -> NodePlaced | SpreadPlaced | NotPlaced:
    """Where the engine goes now, or why it waits (`busy`: a start elsewhere ends first)."""
    busy = busy or {}
    if spans_nodes(need, nodes):
        return place_across(need, nodes, reservations, headroom, busy)
    return place_single(need.gpu_count, need.per_gpu_bytes, nodes, reservations, headroom, busy)


def place_single(
    count: int,
    per_gpu_bytes: int,
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]] | None = None,
    excluded: Collection[tuple[str, int]] = (),
) -> NodePlaced | NotPlaced:
    """The node, and its GPUs, with the least room that still fits (best fit).

    The score is today's: the room left on the chosen GPUs, so the fullest node that still
    holds the engine wins and large free nodes stay free for large engines. GPUs held whole
    (by a multi-node engine) and `excluded` ones (another instance of a P/D set) are
    skipped. A fit only on GPUs where an engine is starting is a wait, as on one box.
    """
    busy = busy or {}
    grouped = by_node(reservations)
    best: tuple[tuple[int, str], NodePlaced] | None = None
    waiting: list[str] = []
    for node in sorted((n for n in nodes if n.usable), key=lambda n: n.name):
        held = grouped.get(node.name, [])
        whole = whole_gpus(held)
        free = [
            gpu
            for gpu in node.gpus
            if gpu.index not in whole and (node.name, gpu.index) not in excluded
        ]
        starting = busy_on(busy, node.name)
        outcome = place(count, per_gpu_bytes, free, plain(held), headroom, starting)
        if isinstance(outcome, Placed):
            room = gpu_room(node, held, headroom)
            key = (sum(room[index] for index in outcome.gpus), node.name)
            if best is None or key < best[0]:
                best = (key, NodePlaced(node.name, outcome.gpus, outcome.per_gpu_bytes))
        elif outcome.busy:
            on_free = sorted({gpu.index for gpu in free} & set(starting))
            waiting.extend(f"{node.name} GPU{index}" for index in on_free)
    if best is not None:
        return best[1]
    need_text = describe_need(count, per_gpu_bytes)
    if waiting:
        return NotPlaced(
            f"{need_text}; waiting for the engine starting on {', '.join(waiting)}", busy=True
        )
    return NotPlaced(f"{need_text}; {describe_nodes(nodes, grouped, headroom, excluded)}")


def describe_nodes(
    nodes: Sequence[NodeView],
    grouped: Mapping[str, list[NodeReservation]],
    headroom: float,
    excluded: Collection[tuple[str, int]] = (),
) -> str:
    if not nodes:
        return "no nodes in the cluster"
    parts = []
    for node in sorted(nodes, key=lambda n: n.name):
        text = describe_node_room(node, grouped.get(node.name, []), headroom)
        taken = sorted(index for name, index in excluded if name == node.name)
        if taken and node.usable:
            text += f" (GPU{', GPU'.join(map(str, taken))} used by the set's other instances)"
        parts.append(text)
    return "; ".join(parts)
