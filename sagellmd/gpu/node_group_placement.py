"""A disaggregated engine's instances across nodes: no two share a GPU, which is now
(node, index); the set on one node when one holds it (the KV transfer stays off the
network), spread only when none does; placed as one unit or pending as one. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sagellmd.gpu.group_placement import GroupStart, place_group
from sagellmd.gpu.node_placement import place_single
from sagellmd.gpu.node_view import (
    NodePlaced,
    NodeReservation,
    NodeView,
    busy_on,
    by_node,
    gpu_room,
    plain,
    whole_gpus,
)
from sagellmd.gpu.placement import NotPlaced, Placed

ONE_UNIT = "(prefill and decode instances never share a GPU) waits as one unit"


def place_group_on_nodes(
    group: str,
    starts: Sequence[GroupStart],
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]] | None = None,
    held: Mapping[str, tuple[str, Collection[int]]] | None = None,
    spread: bool = False,
) -> dict[str, NodePlaced] | NotPlaced:
    """A node and GPUs for every start of `group`, or one reason none of them may start.

    `held` maps the group's other instances to (node, GPUs) they keep. `spread` is the
    spec's `disaggregated.spread: nodes`: each instance prefers a node no other instance of
    the set is on (failure isolation) and shares one only when no other has room.
    """
    busy, held = busy or {}, held or {}
    waiting: NotPlaced | None = None
    if not spread:
        together = _on_one_node(group, starts, nodes, reservations, headroom, busy, held)
        if isinstance(together, dict):
            return together
        waiting = together
    spread_out = _one_by_one(group, starts, nodes, reservations, headroom, busy, held, spread)
    if isinstance(spread_out, NotPlaced) and waiting is not None and waiting.busy:
        return waiting  # it fits together once a start ends: wait rather than report no room
    return spread_out


def _on_one_node(
    group: str,
    starts: Sequence[GroupStart],
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]],
    held: Mapping[str, tuple[str, Collection[int]]],
) -> dict[str, NodePlaced] | NotPlaced | None:
    """The whole set on the fullest node that holds it; only the node of the kept
    instances qualifies when some are kept (all on one node)."""
    held_nodes = {node for node, _ in held.values()}
    if len(held_nodes) > 1:
        return None
    grouped = by_node(reservations)
    best: tuple[tuple[int, str], dict[str, NodePlaced]] | None = None
    waiting: NotPlaced | None = None
    for node in sorted((n for n in nodes if n.usable), key=lambda n: n.name):
        if held_nodes and node.name not in held_nodes:
            continue
        on_node = grouped.get(node.name, [])
        whole = whole_gpus(on_node)
        outcome = place_group(
            group,
            starts,
            [gpu for gpu in node.gpus if gpu.index not in whole],
            plain(on_node),
            headroom,
            busy_on(busy, node.name),
            {engine_id: gpus for engine_id, (_, gpus) in held.items()},
        )
        if isinstance(outcome, NotPlaced):
            waiting = waiting or (outcome if outcome.busy else None)
            continue
        room = gpu_room(node, on_node, headroom)
        key = (sum(room[i] for placed in outcome.values() for i in placed.gpus), node.name)
        if best is None or key < best[0]:
            best = (key, _on(node.name, outcome))
    return best[1] if best is not None else waiting


def _on(node: str, placed: Mapping[str, Placed]) -> dict[str, NodePlaced]:
    return {
        engine_id: NodePlaced(node, one.gpus, one.per_gpu_bytes)
        for engine_id, one in placed.items()
    }


def _one_by_one(
    group: str,
    starts: Sequence[GroupStart],
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]],
    held: Mapping[str, tuple[str, Collection[int]]],
    spread: bool,
) -> dict[str, NodePlaced] | NotPlaced:
    """Largest first (so a small one does not take a large one's GPU), best fit each,
    never on a GPU another instance of the set holds or was just given."""
    taken = {(node, gpu) for node, gpus in held.values() for gpu in gpus}
    used_nodes = {node for node, _ in held.values()}
    planned: list[NodeReservation] = []
    placed: dict[str, NodePlaced] = {}
    for start in sorted(starts, key=lambda s: (-s.count, -s.per_gpu_bytes)):
        outcome: NodePlaced | NotPlaced | None = None
        if spread:
            elsewhere = [node for node in nodes if node.name not in used_nodes]
            if elsewhere:
                outcome = place_single(
                    start.count, start.per_gpu_bytes, elsewhere, [*reservations, *planned],
                    headroom, busy, taken,
                )  # fmt: skip
        if not isinstance(outcome, NodePlaced):
            outcome = place_single(
                start.count, start.per_gpu_bytes, nodes, [*reservations, *planned],
                headroom, busy, taken,
            )  # fmt: skip
        if isinstance(outcome, NotPlaced):
            return NotPlaced(
                f"{group} {ONE_UNIT}: {start.engine_id} {outcome.message}", outcome.busy
            )
        placed[start.engine_id] = outcome
        planned.extend(outcome.reservations(start.engine_id))
        taken.update((outcome.node, gpu) for gpu in outcome.gpus)
        used_nodes.add(outcome.node)
    return placed
