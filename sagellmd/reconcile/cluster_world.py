"""The reconcile loop's cluster parts: the GPU view of every node, the planner's numbering
of instances' GPUs, a lost node's engines, and adoption through the agents."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sagellmd.cluster.ray_groups import group_name
from sagellmd.cluster.watcher import ClusterWatcher
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.accounting import EstimateCache, build_view, capacities
from sagellmd.gpu.placement import GpuCapacity, GpuView, NodeGpus
from sagellmd.instance import (
    PROCESS_STATES,
    Instance,
    InstanceState,
    StopIntent,
    lost,
    retired,
)
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.world import World

if TYPE_CHECKING:
    from sagellmd.cluster.host import ClusterHost

log = logging.getLogger(__name__)

# View index of a node's GPU 0: the daemon's machine is 0 (its indices stay as without a
# cluster), the other nodes 1000, 2000, ... in name order, for one pass.
NODE_STRIDE = 1000


def cluster_view(
    world: World,
    host: ClusterHost,
    desired: Iterable[DesiredEngine],
    estimates: EstimateCache,
    our_pids: set[int],
) -> GpuView:
    """Every usable node's GPUs in one numbering; unusable nodes say why."""
    desired = list(desired)
    local = build_view(world.inventory, desired, estimates, our_pids, world.settings.headroom)
    gpus: list[GpuCapacity] = list(local.gpus)
    nodes = [
        NodeGpus(host.local_name, 0, len(local.gpus), "" if local.gpus else _no_gpus(local.message))
    ]
    for slot, status in enumerate(host.remote_nodes(), start=1):
        offset = slot * NODE_STRIDE
        name = status.node.name
        if not status.usable or status.inventory is None:
            nodes.append(NodeGpus(name, offset, 0, status.note(world.clock) or "no inventory yet"))
            continue
        found = capacities(status.inventory, set(status.our_pids))
        gpus += [dataclasses.replace(gpu, index=gpu.index + offset) for gpu in found]
        note = "" if found else _no_gpus(status.inventory.message)
        nodes.append(NodeGpus(name, offset, len(found), note))
    return dataclasses.replace(local, gpus=tuple(gpus), nodes=tuple(nodes))


def _no_gpus(message: str) -> str:
    return message if message.startswith("no GPUs") else f"no GPUs ({message or 'none found'})"


def _offset(node: str | None, host_name: str, nodes: Iterable[NodeGpus]) -> int | None:
    name = node or host_name
    found = next((entry for entry in nodes if entry.name == name), None)
    if found is None or not found.count or found.note:
        return None  # a node that offers no GPUs now (dead): what ran there holds none
    return found.offset


def in_view_numbering(
    instances: Mapping[str, Instance], view: GpuView, local_name: str
) -> dict[str, Instance]:
    """Instances with their GPUs as the view numbers them; on a node the view has no GPUs
    of (dead), they hold none."""
    if not view.nodes:
        return dict(instances)
    result = {}
    for key, instance in instances.items():
        offset = _offset(instance.node, local_name, view.nodes)
        gpus = tuple(gpu + offset for gpu in instance.gpus) if offset is not None else ()
        if instance.spans:
            gpus = _spanned(instance.spans, local_name, view.nodes)
        retiring = instance.retiring
        if retiring is not None:
            old = _offset(retiring.node, local_name, view.nodes)
            moved = tuple(gpu + old for gpu in retiring.gpus) if old is not None else ()
            retiring = dataclasses.replace(retiring, gpus=moved)
        result[key] = dataclasses.replace(instance, gpus=gpus, retiring=retiring)
    return result


def _spanned(
    spans: Iterable[tuple[str, tuple[int, ...]]], local_name: str, nodes: Iterable[NodeGpus]
) -> tuple[int, ...]:
    """Every GPU of an engine spanning nodes, as the view numbers them (none of a dead
    node's: its loss ends the engine)."""
    nodes = list(nodes)
    gpus: list[int] = []
    for name, local in spans:
        offset = _offset(None if name == local_name else name, local_name, nodes)
        if offset is not None:
            gpus += [gpu + offset for gpu in local]
    return tuple(gpus)


def on_node(instance: Instance, node: str) -> bool:
    """Whether its process, or a share of an engine spanning nodes, is on `node`."""
    return instance.node == node or any(name == node for name, _ in instance.spans)


def lose_node(world: World, prober: Prober, node: str, why: str) -> None:
    """The node is gone: each of its engines is lost (an exit, so the restart policy places
    it again where it fits), with an event for the node and for each engine."""
    watcher = world.watcher
    assert isinstance(watcher, ClusterWatcher)  # only a daemon on a cluster loses nodes
    engines = []
    for engine_id, instance in list(world.instances.items()):
        if instance.retiring is not None and instance.retiring.node == node:
            instance = world.record(retired(instance, f"lost with node {node}"))
            watcher.untrack(f"{engine_id}#retiring")
        if not on_node(instance, node):
            continue
        if instance.state not in PROCESS_STATES and not instance.asleep:
            continue
        prober.cancel(engine_id)
        if instance.spans and world.cluster is not None:
            world.cluster.remove_group(group_name(engine_id))
        if instance.node != node and engine_id in watcher:
            # A stage of an engine spanning nodes is gone: its leader, elsewhere, cannot go
            # on without it (vLLM has no pipeline stage to spare).
            watcher.kill(engine_id)
        watcher.untrack(engine_id)
        engines.append(engine_id)
        ending = instance.state is InstanceState.STOPPING and instance.stop_intent not in (
            None,
            StopIntent.FAILURE,
        )
        if instance.pid is None or instance.asleep or ending:
            # On its way out anyway (or asleep): its end is recorded as an exit would be.
            on_exit(world, engine_id, instance.pid, None, None)
            continue
        desired = world.desired_engine(engine_id)
        policy = desired.spec.restart if desired else "never"
        world.record(lost(instance, node, world.clock(), policy))
    listed = ", ".join(engines) or "no engines"
    world.event(None, "node_lost", f"node {node} is gone ({why}); lost: {listed}")
    world.wake()
