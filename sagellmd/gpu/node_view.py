"""What placement across nodes sees and answers: nodes, reservations, placements. Pure.

A GPU is named (node, index) everywhere here: indices repeat from node to node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from sagellmd.gpu.placement import GIB, GpuCapacity, Reservation, available_bytes


@dataclass(frozen=True)
class EngineNeed:
    """What one engine asks of the cluster: tp x pp GPUs of `per_gpu_bytes` each.

    `nodes`: the spec's `nodes: N`, None when it names none (then the engine spans nodes
    only if it fits on no single one).
    """

    engine_id: str
    per_gpu_bytes: int
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    nodes: int | None = None

    @property
    def gpu_count(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True)
class NodeView:
    """One node: its GPUs, and why it takes no engine if it does not (`down`).

    `down` is printed as is in pending reasons ("dead", "dead since 12:04:10", "agent
    version 0.2 != 0.3"), so the caller, who holds the clock, words it.
    """

    name: str
    gpus: tuple[GpuCapacity, ...] = ()
    down: str = ""

    @property
    def usable(self) -> bool:
        return not self.down


@dataclass(frozen=True)
class NodeReservation:
    """GPUs of one node held by an engine; `whole` GPUs are shared with no other engine.

    A multi-node engine holds whole GPUs: Ray, not sagellm, picks which GPU each of vLLM's
    workers gets on its node, so no other engine may count on the room left beside it.
    """

    engine_id: str
    node: str
    gpus: tuple[int, ...]
    per_gpu_bytes: int
    whole: bool = False


@dataclass(frozen=True)
class NodePlaced:
    """The engine runs on one node, vLLM's default executor, these GPUs."""

    node: str
    gpus: tuple[int, ...]
    per_gpu_bytes: int

    def reservations(self, engine_id: str) -> tuple[NodeReservation, ...]:
        return (NodeReservation(engine_id, self.node, self.gpus, self.per_gpu_bytes),)


@dataclass(frozen=True)
class NodeShare:
    """The GPUs one node gives a multi-node engine: pp / N whole pipeline stages of tp."""

    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class SpreadPlaced:
    """The engine spans nodes through vLLM's Ray executor: tensor parallel within a node,
    pipeline parallel across nodes. `shares[0]` is the leader's node (bundle 0, where the
    API server runs)."""

    shares: tuple[NodeShare, ...]
    per_gpu_bytes: int
    tensor_parallel: int
    pipeline_parallel: int

    def reservations(self, engine_id: str) -> tuple[NodeReservation, ...]:
        return tuple(
            NodeReservation(engine_id, share.node, share.gpus, self.per_gpu_bytes, whole=True)
            for share in self.shares
        )

    @property
    def stages_per_node(self) -> int:
        """Which stages a node runs is vLLM's choice (it orders workers by node IP)."""
        return self.pipeline_parallel // len(self.shares)

    @property
    def bundle_nodes(self) -> tuple[str, ...]:
        """The node of each placement-group bundle, one bundle per GPU, leader's first."""
        return tuple(share.node for share in self.shares for _ in share.gpus)

    def placement_group(self) -> dict[str, object]:
        """The arguments of the engine's Ray placement group, as plain data.

        Every bundle is pinned by the `sagellm.node` label, STRICT_SPREAD included: without
        the selector Ray would pick any nodes, not the ones this placement chose.
        """
        nodes = self.bundle_nodes
        strategy = "STRICT_SPREAD" if len(set(nodes)) == len(nodes) else "PACK"
        return {
            "bundles": [{"GPU": 1} for _ in nodes],
            "strategy": strategy,
            "bundle_label_selector": [{"sagellm.node": node} for node in nodes],
        }


def by_node(reservations: Iterable[NodeReservation]) -> dict[str, list[NodeReservation]]:
    grouped: dict[str, list[NodeReservation]] = {}
    for reservation in reservations:
        grouped.setdefault(reservation.node, []).append(reservation)
    return grouped


def plain(reservations: Iterable[NodeReservation]) -> list[Reservation]:
    return [Reservation(r.engine_id, r.gpus, r.per_gpu_bytes) for r in reservations]


def whole_gpus(reservations: Iterable[NodeReservation]) -> dict[int, str]:
    """GPU index -> the engine holding it whole, on one node's reservations."""
    return {gpu: r.engine_id for r in reservations if r.whole for gpu in r.gpus}


def gpu_room(
    node: NodeView, reservations: Iterable[NodeReservation], headroom: float
) -> dict[int, int]:
    reserved: dict[int, int] = {}
    for reservation in reservations:
        for gpu in reservation.gpus:
            reserved[gpu] = reserved.get(gpu, 0) + reservation.per_gpu_bytes
    return {
        gpu.index: available_bytes(gpu, reserved.get(gpu.index, 0), headroom) for gpu in node.gpus
    }


def gb(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def describe_node_room(
    node: NodeView,
    reservations: Collection[NodeReservation],
    headroom: float,
) -> str:
    """`node-a: GPU0 5.0 GiB free, GPU1 held whole by m.big` / `node-b: dead`."""
    if node.down:
        return f"{node.name}: {node.down}"
    if not node.gpus:
        return f"{node.name}: no GPUs"
    room = gpu_room(node, reservations, headroom)
    whole = whole_gpus(reservations)
    parts = [
        f"GPU{gpu.index} held whole by {whole[gpu.index]}"
        if gpu.index in whole
        else f"GPU{gpu.index} {gb(max(0, room[gpu.index]))} free"
        for gpu in sorted(node.gpus, key=lambda g: g.index)
    ]
    return f"{node.name}: {', '.join(parts)}"


def busy_on(busy: Mapping[str, Collection[int]], name: str) -> Collection[int]:
    return busy.get(name, ())
