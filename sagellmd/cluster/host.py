"""The daemon's side of a Ray cluster: which nodes there are, their agents, GPUs and losses.

Membership comes from Ray (`RayCluster.nodes()`, read every half second); each other node
gets its agent (a detached named actor), whose engine exits arrive through one pending
`next_events` call per agent. The daemon's own machine runs its engines itself, as without
a cluster. See docs/multi-node.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sagellmd import __version__
from sagellmd.cluster.ray_backend import AgentUnreachable, ClusterNode, NodeAgent, RayCluster
from sagellmd.cluster.ray_groups import create_group, remove_group
from sagellmd.cluster.watcher import ClusterWatcher
from sagellmd.config import Settings
from sagellmd.gpu.inventory import GpuInventory

log = logging.getLogger(__name__)

MEMBERSHIP_INTERVAL_S = 0.5
EVENTS_WAIT_S = 5.0
# An agent is created (and its worker process started) on first use: seconds on a busy box.
FIRST_CALL_TIMEOUT_S = 60.0


@dataclass
class NodeStatus:
    """What the daemon knows of one node."""

    node: ClusterNode
    local: bool
    agent: NodeAgent | None = None
    about: dict[str, object] | None = None
    inventory: GpuInventory | None = None
    our_pids: tuple[int, ...] = ()
    dead_since: float | None = None
    # Why the node takes no engines although Ray has it alive (an agent of another version).
    message: str | None = None
    suspect: bool = False
    # Its agent did not answer: the membership watch makes a new one, which adopts.
    retry_agent: bool = False

    @property
    def usable(self) -> bool:
        return self.node.alive and self.message is None and (self.local or self.agent is not None)

    def note(self, clock: Callable[[], float]) -> str:
        """What placement says of a node it cannot use."""
        if not self.node.alive:
            if self.dead_since is None:
                return "dead"
            return f"dead since {time.strftime('%H:%M:%S', time.localtime(self.dead_since))}"
        return self.message or ("agent starting" if self.agent is None else "")


NodeLost = Callable[[str, str], None]


class ClusterHost:
    """Nodes, agents and their events, for one daemon (a Ray driver)."""

    def __init__(
        self,
        settings: Settings,
        watcher: ClusterWatcher,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.cluster is not None
        self.settings = settings.cluster
        self.cluster = RayCluster(settings.cluster, str(settings.home), str(settings.logs_dir))
        self._watcher = watcher
        self._wake = wake
        self._clock = clock
        self.nodes: dict[str, NodeStatus] = {}
        self.local_name = ""
        self.on_node_lost: NodeLost = lambda node, why: None
        self.on_event: Callable[[str, str], None] = lambda type_, message: None
        self.on_agent_started: Callable[[str], None] = lambda node: None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._membership: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- start

    def connect(self) -> None:
        """Join the cluster and reach every live node's agent (before adoption)."""
        self.cluster.connect()
        local_id = self.cluster.local_node_id()
        for node in self.cluster.nodes():
            local = node.ray_node_id == local_id
            status = NodeStatus(node, local, message=node.message)
            self.nodes[node.name] = status
            if local:
                self.local_name = node.name
            elif node.alive and node.message is None:
                try:
                    self._attach(status, self.cluster.agent(node))
                except AgentUnreachable as exc:
                    # Retried by the membership watch, which then adopts its engines.
                    status.message = f"its agent does not answer: {exc.detail}"
                    status.retry_agent = True
        if not self.local_name:
            self.local_name = "local"

    def _attach(self, status: NodeStatus, agent: NodeAgent) -> None:
        about = agent.call("about", timeout_s=FIRST_CALL_TIMEOUT_S)
        self._use(status, agent, about)
        if status.message is None:
            inventory = agent.call("inventory", status.node.gpus, timeout_s=FIRST_CALL_TIMEOUT_S)
            status.inventory, status.our_pids = inventory.inventory, tuple(inventory.our_pids)

    def _use(self, status: NodeStatus, agent: NodeAgent, about: dict[str, object]) -> None:
        status.about = about
        version = about.get("sagellm")
        if version != __version__:
            status.message = (
                f"its agent runs sagellm {version}, this daemon {__version__}: install the"
                " same sagellm version on every node"
            )
            return
        status.agent = agent
        self._watcher.use_agent(agent)

    def start(self) -> None:
        """The membership watch and one event pump per agent, on the running loop."""
        self._membership = asyncio.create_task(self._watch_membership(), name="cluster-nodes")
        for status in self.nodes.values():
            if status.agent is not None:
                self._pump(status)

    def _pump(self, status: NodeStatus) -> None:
        name = status.node.name
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        assert status.agent is not None
        self._tasks[name] = asyncio.create_task(
            self._events(status, status.agent), name=f"agent-{name}"
        )

    # ---------------------------------------------------------------- events

    async def _events(self, status: NodeStatus, agent: NodeAgent) -> None:
        """Hold one `next_events` call open: an engine's exit arrives as it happens."""
        while status.agent is agent:
            try:
                events = await agent.call_async(
                    "next_events", EVENTS_WAIT_S, timeout_s=EVENTS_WAIT_S + 10
                )
            except AgentUnreachable as exc:
                # Ray decides whether the node is gone; until then it is only suspect.
                if not status.suspect:
                    log.warning("node %s: agent unreachable: %s", agent.node, exc.detail)
                status.suspect = True
                if not self._node_alive(status.node.ray_node_id):
                    # Ray's verdict is in: act now rather than at the next membership pass.
                    await self._membership_pass()
                    return
                await asyncio.sleep(0.2)
                if agent.dead and self._node_alive(status.node.ray_node_id):
                    await self._replace_agent(status)
                    return
                continue
            status.suspect = False
            for event in events:
                if event.kind == "exited":
                    self._watcher.exited(
                        agent.node, event.engine_id, event.pid, event.code, event.signal
                    )

    def _node_alive(self, ray_node_id: str) -> bool:
        return any(n.ray_node_id == ray_node_id and n.alive for n in self.cluster.nodes())

    async def _start_agent(self, status: NodeStatus) -> bool:
        """A new agent on the node; the daemon adopts what it finds running there of its
        records and stops the rest (`on_agent_started`). False if it does not answer (then
        retried) or runs another version."""
        agent = self.cluster.agent(status.node)
        try:
            about = await agent.call_async("about", timeout_s=FIRST_CALL_TIMEOUT_S)
        except AgentUnreachable as exc:
            status.message = f"its agent does not answer: {exc.detail}"
            status.retry_agent = True
            return False
        self._use(status, agent, about)
        if status.agent is None:
            return False
        status.suspect = False
        self.on_agent_started(status.node.name)
        await self._refresh_inventory(status)
        self._pump(status)
        return True

    async def _replace_agent(self, status: NodeStatus) -> None:
        """The agent died (or never answered) and its node lives: a new one, which adopts
        the engines (they outlive their agent)."""
        name = status.node.name
        self._watcher.drop_agent(name)
        status.agent = None
        if await self._start_agent(status):
            pid = status.about.get("pid") if status.about else None
            self.on_event("node", f"node {name}: a new agent (pid {pid}) adopts its engines")
        self._wake()

    async def _watch_membership(self) -> None:
        while True:
            await asyncio.sleep(MEMBERSHIP_INTERVAL_S)
            try:
                await self._membership_pass()
            except Exception:
                log.exception("cluster membership check failed")

    async def _membership_pass(self) -> None:
        changed = False
        for node in self.cluster.nodes():
            status = self.nodes.get(node.name)
            if status is None or status.node.ray_node_id != node.ray_node_id:
                if status is not None and status.node.alive and not status.local:
                    # A new Ray node under a known name: the old one is gone, whatever Ray
                    # says of it yet.
                    self._lose(status, "its Ray node was replaced")
                changed |= await self._joined(node, status)
                continue
            if status.node.alive and not node.alive:
                status.node = node
                self._lose(status, "Ray reports the node dead")
                changed = True
                continue
            status.node = node
            if status.retry_agent and node.alive:
                status.retry_agent, status.message = False, None
                await self._replace_agent(status)
                changed = True
            elif status.agent is not None:
                changed |= await self._refresh_inventory(status)
        if changed:
            self._wake()

    async def _joined(self, node: ClusterNode, old: NodeStatus | None) -> bool:
        """A node Ray lists under a new id (new, or back): its agent, which stops the
        engines of this home no record places there (re-placed elsewhere meanwhile)."""
        status = NodeStatus(node, False, message=node.message)
        if old is not None and not node.alive:
            status.dead_since = old.dead_since
        self.nodes[node.name] = status
        if node.alive and node.message is None and await self._start_agent(status):
            self.on_event("node_joined", f"node {node.name} ({node.address}) joined")
        return True

    async def _refresh_inventory(self, status: NodeStatus) -> bool:
        assert status.agent is not None
        try:
            found = await status.agent.call_async("inventory", status.node.gpus, timeout_s=5)
        except AgentUnreachable:
            return False
        before = (status.inventory, status.our_pids)
        status.inventory, status.our_pids = found.inventory, tuple(found.our_pids)
        return before != (status.inventory, status.our_pids)

    def _lose(self, status: NodeStatus, why: str) -> None:
        name = status.node.name
        status.dead_since = self._clock()
        status.agent = None
        self._watcher.drop_agent(name)
        task = self._tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # (its own pump, which found the node dead, just returns)
        self.on_node_lost(name, why)

    # ---------------------------------------------------------------- queries

    def local_gpu_setting(self, configured: str) -> str:
        """The daemon's machine's GPUs: its node's sagellm.gpus label, else `gpus:`."""
        status = self.nodes.get(self.local_name)
        label = status.node.gpus if status is not None else "auto"
        return configured if label == "auto" else label

    def is_local(self, node: str | None) -> bool:
        return node is None or node == self.local_name

    def engine_host(self, node: str) -> str:
        """The address engines on `node` listen on, and the gateway and probes reach."""
        status = self.nodes.get(node)
        return self.settings.advertise.get(node) or (status.node.address if status else node)

    def remote_nodes(self) -> list[NodeStatus]:
        return sorted(
            (status for status in self.nodes.values() if not status.local),
            key=lambda status: status.node.name,
        )

    def gcs_address(self) -> str:
        """The cluster's address as engines spanning nodes connect to it (RAY_ADDRESS)."""
        return str(self.cluster.ray.get_runtime_context().gcs_address)

    def create_group(self, name: str, arguments: Mapping[str, Any]) -> str:
        return create_group(self.cluster.ray, name, arguments)

    def remove_group(self, name: str) -> bool:
        try:
            return remove_group(self.cluster.ray, name)
        except Exception:
            log.exception("placement group %s could not be removed", name)
            return False

    def shutdown(self) -> None:
        for task in [*self._tasks.values(), self._membership]:
            if task is not None:
                task.cancel()
        self._tasks.clear()
        with contextlib.suppress(Exception):
            self.cluster.shutdown()
