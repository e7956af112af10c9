"""Daemon start on a cluster: adopt the engines the other nodes' agents kept running."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sagellmd.cluster.ray_backend import AgentUnreachable
from sagellmd.cluster.watcher import ClusterWatcher
from sagellmd.instance import PROCESS_STATES, InstanceState, retired, retiring_key
from sagellmd.reconcile.cluster_world import lose_node, on_node
from sagellmd.reconcile.observe import Prober, on_exit
from sagellmd.reconcile.world import World

if TYPE_CHECKING:
    from sagellmd.cluster.host import ClusterHost, NodeStatus

log = logging.getLogger(__name__)

# A pid's create time as psutil reads it on the node and as the store kept it.
SAME_START_S = 0.05


def _expected(world: World, node: str) -> dict[str, tuple[int, float]]:
    """The processes the store says run on `node`: key -> pid, create time."""
    found = {}
    for engine_id, instance in world.instances.items():
        old = instance.retiring
        if old is not None and old.node == node:
            found[retiring_key(engine_id)] = (old.pid, old.create_time)
        running = instance.state in PROCESS_STATES or instance.asleep
        if instance.node == node and running and instance.pid is not None:
            found[engine_id] = (instance.pid, instance.create_time or 0.0)
    return found


def recover_remote(world: World, prober: Prober, host: ClusterHost) -> None:
    """For every other node: watch again what its agent still runs, record the end of what
    ended, stop what no record names; the engines of nodes that are gone are lost."""
    watcher = world.watcher
    assert isinstance(watcher, ClusterWatcher)
    for status in host.remote_nodes():
        name = status.node.name
        expected = _expected(world, name)
        if status.agent is None:
            running = [i for i in world.instances.values() if i.pid is not None]
            if not status.node.alive and any(on_node(i, name) for i in running):
                lose_node(world, prober, name, "dead when the daemon started")
            continue
        try:
            _adopt_on(world, prober, watcher, status, expected)
        except AgentUnreachable as exc:
            log.warning("node %s: adoption failed: %s", name, exc.detail)


def adopt_from_new_agent(world: World, prober: Prober, host: ClusterHost, node: str) -> None:
    """A node has a new agent (its old one died, or the node joined or came back): it
    watches the engines of our records still running there; the rest are stopped."""
    watcher = world.watcher
    status = host.nodes.get(node)
    if status is None or status.agent is None or not isinstance(watcher, ClusterWatcher):
        return
    for process in watcher.remote_on(node):
        watcher.untrack(process.key)
    try:
        _adopt_on(world, prober, watcher, status, _expected(world, node))
    except AgentUnreachable as exc:
        log.warning("node %s: adoption by its new agent failed: %s", node, exc.detail)


def _adopt_on(
    world: World,
    prober: Prober,
    watcher: ClusterWatcher,
    status: NodeStatus,
    expected: dict[str, tuple[int, float]],
) -> None:
    agent, name = status.agent, status.node.name
    assert agent is not None
    table = {engine.engine_id: engine for engine in agent.call("engines")}
    unknown = {key: value for key, value in expected.items() if key not in table}
    if unknown:
        # A new agent (its node came back): it watches marked engines it finds alive.
        for engine in agent.call("adopt", unknown):
            table[engine.engine_id] = engine
    for key, (pid, create_time) in expected.items():
        engine = table.get(key)
        same = engine is not None and engine.pid == pid
        if same and abs(engine.started_at - create_time) <= SAME_START_S:
            _watch_again(world, prober, watcher, name, key, pid, create_time)
        else:
            _ended(world, key, pid)
    for key, engine in table.items():
        if key not in expected:
            world.event(
                key.removesuffix("#retiring"),
                "stopped",
                f"stray pid {engine.pid} on node {name} (no record of it): killed",
            )
            agent.call("kill", key)
    killed = agent.call("kill_strays")
    if killed:
        world.event(None, "stopped", f"node {name}: stray pids {killed} (no record of them) killed")


def _watch_again(
    world: World,
    prober: Prober,
    watcher: ClusterWatcher,
    node: str,
    key: str,
    pid: int,
    create_time: float,
) -> None:
    watcher.track(node, key, pid, create_time)
    if key.endswith("#retiring"):
        return
    instance = world.instances[key]
    world.event(key, "adopted", f"pid {pid} on node {node} kept running; watching it again")
    if instance.state is InstanceState.STOPPING:
        watcher.stop(key, world.settings.stop_grace_s)
    elif not instance.asleep:
        prober.start(key, pid)


def _ended(world: World, key: str, pid: int) -> None:
    if key.endswith("#retiring"):
        base = world.instances[key.removesuffix("#retiring")]
        world.record(retired(base, "ended while the daemon was not running"))
        return
    world.event(key, "exited", f"pid {pid} ended while the daemon was not running")
    on_exit(world, key, pid, None, None)
