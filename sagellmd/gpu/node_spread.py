"""Placement of one engine across nodes, for vLLM's Ray executor. Pure.

vLLM's layout (docs/serving/parallelism_scaling.md): tensor parallel within a node,
pipeline parallel across nodes. So each of N nodes runs pp / N whole pipeline stages of tp
GPUs, N must divide pp, and every GPU is one `{GPU: 1}` bundle held whole (Ray, not
sagellm, gives each worker its GPU on the node).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sagellmd.gpu.node_view import (
    EngineNeed,
    NodeReservation,
    NodeShare,
    NodeView,
    SpreadPlaced,
    busy_on,
    by_node,
    gb,
    gpu_room,
)
from sagellmd.gpu.placement import GpuCapacity, NotPlaced, group_bytes


def place_across(
    need: EngineNeed,
    nodes: Sequence[NodeView],
    reservations: Sequence[NodeReservation],
    headroom: float,
    busy: Mapping[str, Collection[int]],
) -> SpreadPlaced | NotPlaced:
    usable = sorted((node for node in nodes if node.usable), key=lambda n: n.name)
    tp, pp = need.tensor_parallel, need.pipeline_parallel
    down = "".join(f"; {node.name}: {node.down}" for node in nodes if not node.usable)
    if need.nodes is not None:
        if pp % need.nodes:
            return NotPlaced(
                f"nodes: {need.nodes} needs pipeline_parallel ({pp}) to be a multiple of it:"
                " tensor parallel stays within a node, whole pipeline stages go to each node"
            )
        if need.nodes > len(usable):
            return NotPlaced(
                f"nodes: {need.nodes} but the cluster has {len(usable)} alive"
                f" node{'s' if len(usable) != 1 else ''}{down}"
            )
        counts = [need.nodes]
    else:
        most = max((len(node.gpus) for node in usable), default=0)
        if tp > most:
            return NotPlaced(
                f"tensor_parallel {tp} exceeds the GPUs of every node (at most {most}):"
                " tensor parallel stays within a node"
            )
        # Never empty: n = pp (one stage of tp <= most GPUs per node) always divides.
        counts = [n for n in range(2, pp + 1) if pp % n == 0 and tp * pp // n <= most]
        # Too few alive nodes for any split: the reason below names the dead ones.
        counts = [n for n in counts if n <= len(usable)] or counts[:1]
    grouped = by_node(reservations)
    for count in counts:
        placed = _choose(need, count, usable, grouped, headroom, busy, with_busy=False)
        if placed is not None:
            return placed
    count = counts[0]
    per_node = tp * pp // count
    gpus = f"{per_node} GPU{'s' if per_node != 1 else ''}"
    head = f"needs {count} nodes x {gpus} x {gb(need.per_gpu_bytes)}"
    if _choose(need, count, usable, grouped, headroom, busy, with_busy=True) is not None:
        starting = ", ".join(
            f"{node.name} GPU{index}"
            for node in usable
            for index in sorted(busy_on(busy, node.name))
        )
        return NotPlaced(f"{head}; waiting for the engine starting on {starting}", busy=True)
    parts = []
    for node in sorted(nodes, key=lambda n: n.name):
        if not node.usable:
            parts.append(f"{node.name}: {node.down}")
            continue
        free = _candidates(node, grouped.get(node.name, []), need, headroom, (), True)
        parts.append(f"{node.name}: {len(free)} of {len(node.gpus)} GPUs free")
    return NotPlaced(f"{head}; {'; '.join(parts) or 'no nodes in the cluster'}")


def _candidates(
    node: NodeView,
    held: Sequence[NodeReservation],
    need: EngineNeed,
    headroom: float,
    starting: Collection[int],
    with_busy: bool,
) -> list[tuple[int, GpuCapacity]]:
    """(room, GPU) of the node's wholly free GPUs that hold the need, least room first.

    Wholly free: nothing reserved on it at all, since the worker Ray puts there may be on
    any of the node's GPUs it counts free, and engines sharing by memory are not counted.
    """
    room = gpu_room(node, held, headroom)
    reserved = {gpu for reservation in held for gpu in reservation.gpus}
    return sorted(
        (
            (room[gpu.index], gpu)
            for gpu in node.gpus
            if gpu.index not in reserved
            and room[gpu.index] >= need.per_gpu_bytes
            and (with_busy or gpu.index not in starting)
        ),
        key=lambda pair: (pair[0], pair[1].index),
    )


def _choose(
    need: EngineNeed,
    count: int,
    usable: Sequence[NodeView],
    grouped: Mapping[str, list[NodeReservation]],
    headroom: float,
    busy: Mapping[str, Collection[int]],
    with_busy: bool,
) -> SpreadPlaced | None:
    """`count` nodes with tp x pp / count fitting GPUs each, best fit: the fewest such GPUs
    (the fullest nodes), then the least room. GPUs of one size first: vLLM takes one
    --gpu-memory-utilization for every worker, so mixed sizes make the larger ones take more."""
    per_node = need.gpu_count // count
    free = {
        node.name: _candidates(
            node, grouped.get(node.name, []), need, headroom, busy_on(busy, node.name), with_busy
        )
        for node in usable
    }
    sizes = sorted({gpu.total_bytes for pairs in free.values() for _, gpu in pairs})
    options: list[tuple[int, SpreadPlaced]] = []
    for size in [*sizes, None]:
        if size is None and options:
            break  # one size that fits beats any mix
        placed = _pick(need, count, per_node, free, size)
        if placed is not None:
            options.append(placed)
    return min(options, key=lambda option: option[0])[1] if options else None


def _pick(
    need: EngineNeed,
    count: int,
    per_node: int,
    free: Mapping[str, list[tuple[int, GpuCapacity]]],
    size: int | None,
) -> tuple[int, SpreadPlaced] | None:
    """The best-fit nodes using only GPUs of `size` (None: any), with their room left."""
    pool = {
        name: [pair for pair in pairs if size is None or pair[1].total_bytes == size]
        for name, pairs in free.items()
    }
    fitting = sorted(
        (name for name, pairs in pool.items() if len(pairs) >= per_node),
        key=lambda name: (len(pool[name]), sum(r for r, _ in pool[name][:per_node]), name),
    )
    if len(fitting) < count:
        return None
    chosen = {name: pool[name][:per_node] for name in fitting[:count]}
    per_gpu = group_bytes(
        need.per_gpu_bytes, [gpu for pairs in chosen.values() for _, gpu in pairs]
    )
    if any(room < per_gpu for pairs in chosen.values() for room, _ in pairs):
        return None
    shares = tuple(
        NodeShare(name, tuple(sorted(gpu.index for _, gpu in pairs)))
        for name, pairs in chosen.items()
    )
    score = sum(room for pairs in chosen.values() for room, _ in pairs)
    return score, SpreadPlaced(shares, per_gpu, need.tensor_parallel, need.pipeline_parallel)
