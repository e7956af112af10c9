"""Owns the tests of sagellmd/cluster/ray_backend.py: RayCluster and NodeAgent on a real
local Ray cluster (tests/cluster/conftest.py), agents hosting real `sleep` engines
(issue 17, docs/multi-node.md). One cluster for the module: a head and node-b; the test that
removes a node adds its own, so the tests hold in any order and split over xdist workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sagellmd.cluster.agent_core import AgentEngine, NodeInventory
from sagellmd.cluster.ray_backend import (
    AgentUnreachable,
    ClusterNode,
    ClusterUnreachable,
    NodeAgent,
    RayCluster,
)
from sagellmd.cluster_config import ClusterSettings
from sagellmd.errors import ConfigError
from tests.cluster.conftest import LocalCluster
from tests.integration.conftest import engine_processes, free_port

ROOT = Path(__file__).resolve().parents[2]
SLEEP = ["sleep", "600"]


class World:
    """The cluster, this test process as the daemon's driver, and the daemon's home."""

    def __init__(self, local: LocalCluster, home: Path) -> None:
        self.local = local
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)
        self.settings = ClusterSettings(address=local.address, namespace="sagellm-test")
        self.cluster = RayCluster(self.settings, str(home), str(self.logs))

    def node(self, name: str) -> ClusterNode:
        [node] = [n for n in self.cluster.nodes() if n.name == name]
        return node

    def agent(self, name: str) -> NodeAgent:
        return self.cluster.agent(self.node(name))

    def spawn(self, agent: NodeAgent, engine_id: str) -> AgentEngine:
        env = {"PATH": os.environ["PATH"]}
        return agent.call("spawn", engine_id, SLEEP, env, None)


@pytest.fixture(scope="module")
def world(ray_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ray_cluster.add_node("node-b")
    world = World(ray_cluster, tmp_path_factory.mktemp("home"))
    world.cluster.connect()
    try:
        yield world
    finally:
        world.cluster.shutdown()
        # The agents' engines run in sessions of their own: they outlive the raylets.
        for process in engine_processes(world.home):
            process.kill()


def environ(pid: int) -> dict[str, str]:
    return psutil.Process(pid).environ()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_nodes_lists_the_head_and_the_added_nodes_by_name(world: World):
    started = time.perf_counter()
    nodes = world.cluster.nodes()
    took_ms = (time.perf_counter() - started) * 1000
    print(f"nodes() took {took_ms:.1f} ms")
    by_name = {n.name: n for n in nodes}
    assert len(by_name) == len(nodes)  # one entry per name
    assert {"head", "node-b"} <= set(by_name)
    head, node_b = by_name["head"], by_name["node-b"]
    assert (head.gpus, head.ray_gpus, head.alive, head.message) == ("none", 0.0, True, None)
    assert (node_b.gpus, node_b.ray_gpus, node_b.alive) == ("simulate:2x80", 2.0, True)
    assert node_b.message is None and head.ray_node_id != node_b.ray_node_id
    assert head.address and node_b.address
    # The test process is the driver, attached to one of the raylets: on one box they
    # share an IP, so which one is Ray's choice.
    assert world.cluster.local_node_id() in {n.ray_node_id for n in nodes}


def test_an_agent_runs_on_its_node_and_spawns_engines_there(world: World):
    started = time.perf_counter()
    agent = world.agent("node-b")
    about = agent.call("about", timeout_s=30)
    print(f"agent create + first call took {time.perf_counter() - started:.2f} s")
    assert about["node"] == "node-b"
    # Pinned: the actor's worker is a child of node-b's raylet.
    raylet = world.local._nodes["node-b"].all_processes["raylet"][0].process.pid
    assert raylet in [p.pid for p in psutil.Process(about["pid"]).parents()]
    engine = world.spawn(agent, "p.one")
    assert environ(engine.pid)["SAGELLM_NODE"] == "node-b"
    assert environ(engine.pid)["SAGELLM_HOME"] == str(world.home)
    assert [e.engine_id for e in agent.call("engines")] == ["p.one"]
    assert world.agent("node-b") is agent  # cached per (name, node id)


def test_an_error_of_the_agent_is_raised_as_itself(world: World):
    agent = world.agent("node-b")
    world.spawn(agent, "p.twice")
    with pytest.raises(ValueError, match="p.twice already runs on node-b"):
        world.spawn(agent, "p.twice")
    with pytest.raises(ConfigError, match="gpus: must be auto"):
        agent.call("inventory", "simulate:lots")


def test_a_sigkilled_engine_comes_back_through_a_pending_next_events(world: World):
    agent = world.agent("node-b")
    engine = world.spawn(agent, "p.killed")
    agent.call("next_events", 0.0)  # drop what earlier tests left

    async def kill_and_wait() -> tuple[list, float]:
        pending = asyncio.ensure_future(agent.call_async("next_events", 5.0, timeout_s=15))
        await asyncio.sleep(0.3)  # pending, as the daemon's call always is
        killed = time.monotonic()
        os.kill(engine.pid, signal.SIGKILL)
        events = await pending
        return events, time.monotonic() - killed

    events, took = asyncio.run(kill_and_wait())
    print(f"SIGKILL to event at the driver: {took * 1000:.1f} ms")
    assert took < 1.0
    assert [(e.engine_id, e.pid, e.signal) for e in events] == [
        ("p.killed", engine.pid, signal.SIGKILL)
    ]


def test_a_rekeyed_engine_exits_under_its_new_key(world: World):
    agent = world.agent("node-b")
    engine = world.spawn(agent, "p.surge")
    assert agent.call("rekey", "p.surge", "p.surge#retiring") is True
    assert agent.call("rekey", "p.unknown", "p.other") is False
    ids = [e.engine_id for e in agent.call("engines")]
    assert "p.surge#retiring" in ids and "p.surge" not in ids
    agent.call("next_events", 0.0)
    os.kill(engine.pid, signal.SIGKILL)
    events = agent.call("next_events", 5.0)
    assert [(e.engine_id, e.pid) for e in events] == [("p.surge#retiring", engine.pid)]


def test_inventory_reads_the_nodes_gpus_and_our_processes(world: World):
    agent = world.agent("node-b")
    engine = world.spawn(agent, "p.gpu")
    found = agent.call("inventory", "simulate:2x80")
    assert isinstance(found, NodeInventory)
    assert found.inventory.mode == "simulated"
    assert [d.total_bytes for d in found.inventory.devices] == [80 * 1024**3] * 2
    assert engine.pid in found.our_pids


def test_an_agent_that_does_not_answer_in_time_is_unreachable(world: World):
    # The head's agent: no other test waits on its events.
    agent = world.agent("head")
    started = time.perf_counter()
    with pytest.raises(AgentUnreachable, match="next_events: no answer within 0.2 s"):
        agent.call("next_events", 1.0, timeout_s=0.2)
    with pytest.raises(AgentUnreachable, match="next_events: no answer within 0.2 s") as caught:
        asyncio.run(agent.call_async("next_events", 1.0, timeout_s=0.2))
    assert caught.value.node == "head"
    assert time.perf_counter() - started < 2.5
    assert agent.call("about")["node"] == "head"  # slow, not dead


DRIVER = """
import json, sys
from sagellmd.cluster.ray_backend import RayCluster
from sagellmd.cluster_config import ClusterSettings
from sagellmd.errors import ConfigError
address, namespace, home, logs = sys.argv[1:]
cluster = RayCluster(ClusterSettings(address=address, namespace=namespace), home, logs)
cluster.connect()
[node] = [n for n in cluster.nodes() if n.name == "node-b"]
agent = cluster.agent(node)
about = agent.call("about")
engines = agent.call("engines")
print(json.dumps({"pid": about["pid"], "engines": {e.engine_id: e.pid for e in engines}}))
cluster.shutdown()
"""


def test_a_new_driver_finds_the_same_agent_and_its_engines(world: World):
    agent = world.agent("node-b")
    engine = world.spawn(agent, "p.kept")
    actor_pid = agent.call("about")["pid"]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, world.local.address, world.settings.namespace]
        + [str(world.home), str(world.logs)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    print(f"a new driver process found the agent in {time.perf_counter() - started:.2f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["pid"] == actor_pid
    assert found["engines"]["p.kept"] == engine.pid
    assert alive(engine.pid)


def test_a_removed_node_is_dead_and_its_pending_call_fails(world: World):
    world.local.add_node("node-c", gpus="simulate:1x24", num_gpus=1)
    listed = world.node("node-c")
    assert (listed.alive, listed.gpus, listed.ray_gpus) == (True, "simulate:1x24", 1.0)
    agent = world.cluster.agent(listed)
    engine = world.spawn(agent, "p.lost")
    assert environ(engine.pid)["SAGELLM_NODE"] == "node-c"

    async def remove_and_watch() -> tuple[float, float, BaseException | None]:
        pending = asyncio.ensure_future(agent.call_async("next_events", 30.0, timeout_s=60))
        await asyncio.sleep(0.3)
        removed = time.monotonic()
        world.local.remove_node("node-c")
        dead_s = failed_s = None
        error = None
        while time.monotonic() - removed < 30 and None in (dead_s, failed_s):
            if failed_s is None and pending.done():
                failed_s = time.monotonic() - removed
                error = pending.exception()
            if dead_s is None and not world.node("node-c").alive:
                dead_s = time.monotonic() - removed
            await asyncio.sleep(0.05)
        assert dead_s is not None and failed_s is not None
        return dead_s, failed_s, error

    dead_s, failed_s, error = asyncio.run(remove_and_watch())
    print(f"remove_node -> nodes() alive=False: {dead_s:.2f} s;")
    print(f"remove_node -> pending call_async AgentUnreachable: {failed_s:.2f} s ({error})")
    assert isinstance(error, AgentUnreachable) and error.node == "node-c"
    assert dead_s < 10 and failed_s < 10
    node = world.node("node-c")
    assert node.alive is False and node.ray_node_id == listed.ray_node_id
    with pytest.raises(AgentUnreachable):
        agent.call("about", timeout_s=5)


def test_connect_to_a_dead_address_names_it():
    address = f"127.0.0.1:{free_port()}"
    cluster = RayCluster(ClusterSettings(address=address), "/nonexistent", "/nonexistent")
    started = time.perf_counter()
    with pytest.raises(ClusterUnreachable, match=f"cannot reach the Ray cluster at {address}"):
        cluster.connect()
    assert time.perf_counter() - started < 5


def test_connect_auto_to_a_dead_ray_address_names_both(monkeypatch):
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    cluster = RayCluster(ClusterSettings(address="auto"), "/nonexistent", "/nonexistent")
    # Ray's lookup turns 127.0.0.1 into this node's IP; the port is the one given.
    with pytest.raises(ClusterUnreachable, match=f"Ray cluster at auto \\(.+:{port}\\): "):
        cluster.connect()
