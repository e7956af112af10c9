"""sagellmd on a local multi-node Ray cluster (issue 17, docs/multi-node.md): placement on
nodes, supervision through the agents, adoption across a daemon restart, node loss, and
the gateway reaching an engine on another node. Real Ray, real daemon, stand-in engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import Daemon, daemon_factory, fake_preset, free_port

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(ray_cluster: Any) -> Any:
    """The module's cluster with node-b and node-c, two simulated 80 GiB GPUs each."""
    for name in ("node-b", "node-c"):
        if name not in ray_cluster.node_names():
            ray_cluster.add_node(name, gpus="simulate:2x80", num_gpus=2)
    return ray_cluster


@pytest.fixture
def make_daemon(tmp_path: Path, cluster: Any) -> Iterator[Callable[..., Daemon]]:
    """Daemons on the module's cluster, each in its own Ray namespace (its own agents)."""

    def joined() -> dict[str, Any]:
        namespace = f"t{uuid.uuid4().hex[:10]}"
        return {"cluster": {"address": cluster.address, "namespace": namespace}}

    with daemon_factory(tmp_path, joined, cluster.env) as make:
        yield make


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def declare(daemon: Daemon, record: Path, *engines: dict[str, Any]) -> None:
    preset = fake_preset("multi", *engines)
    for engine in preset["engines"]:
        engine.setdefault("env", {})["FAKE_VLLM_RECORD"] = str(record)
    answer = daemon.put("/v1/presets/multi", preset)
    assert answer.status_code in (200, 202), answer.text


def ready_on(daemon: Daemon, engine_id: str, timeout: float = 30) -> dict[str, Any]:
    entry = daemon.wait_state(engine_id, "ready", timeout)
    assert entry["node"], entry
    return entry


def test_an_engine_lands_on_the_node_placement_chose_and_a_sigkill_restarts_it_there(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    daemon = make_daemon()
    record = tmp_path / "starts.jsonl"
    # The head has no GPUs (its label says none): a GPU engine goes to a node that has.
    declare(daemon, record, {"name": "chat", "gpu_memory_gb": 20})
    entry = ready_on(daemon, "multi.chat")
    node = entry["node"]
    assert node in ("node-b", "node-c")
    start = records(record)[-1]
    assert start["env"]["SAGELLM_NODE"] == node
    assert start["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    status = daemon.get("/v1/status").json()
    nodes = {n["name"]: n for n in status["nodes"]}
    assert nodes["head"]["local"] and nodes[node]["alive"]
    assert "multi.chat" in nodes[node]["engines"]
    # The engine listens on its node's address, which the route table gives the gateway.
    host = nodes[node]["address"]
    assert start["argv"][start["argv"].index("--host") + 1] == host

    killed_at = time.monotonic()
    os.kill(entry["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = daemon.engine("multi.chat")
        return now if now["pid"] not in (None, entry["pid"]) else None

    again = daemon.wait_for(restarted, 10, "a new process of multi.chat")
    took = time.monotonic() - killed_at
    print(f"\nremote SIGKILL -> new process on {again['node']}: {took * 1000:.0f} ms")
    assert again["node"] == node and again["restarts"] == 1
    assert took < 1.0
    assert records(record)[-1]["env"]["SAGELLM_NODE"] == node
    cli = daemon.cli("node", "list")
    assert cli.returncode == 0, cli.stderr
    assert "node-b" in cli.stdout and "head" in cli.stdout and "multi.chat" in cli.stdout
    # Its log is its node's file, read there by the agent: the tail, then a follow.
    tail = daemon.get("/v1/engines/multi.chat/logs", params={"tail": 50}).json()
    assert tail["node"] == node and any("fake vLLM serving" in line for line in tail["lines"])
    followed = daemon.get("/v1/engines/multi.chat/logs", params={"after": 0, "wait": 2}).json()
    assert followed["node"] == node and followed["offset"] == tail["offset"]
    assert followed["lines"] == tail["lines"][-len(followed["lines"]) :]
    logs = daemon.cli("engine", "logs", "multi.chat")
    assert logs.returncode == 0 and "fake vLLM serving" in logs.stdout, logs.stderr


def test_an_engine_failing_on_another_node_is_quoted_from_its_log_there(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    daemon = make_daemon()
    crash = {"FAKE_VLLM_CRASH_AFTER": "0.5", "FAKE_VLLM_EXIT_CODE": "3"}
    declare(daemon, tmp_path / "starts.jsonl", {"name": "chat", "gpu_memory_gb": 20, "env": crash})

    def exited() -> dict[str, Any] | None:
        found = [e for e in daemon.events("multi.chat") if e["type"] == "exited"]
        return found[0] if found else None

    event = daemon.wait_for(exited, 30, "multi.chat to exit")
    assert "exit code 3" in event["message"]
    assert "crashing as told (FAKE_VLLM_CRASH_AFTER=0.5, exit 3)" in event["message"]


def test_a_dead_agent_is_replaced_and_the_new_one_adopts_its_engines(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    daemon = make_daemon()
    declare(daemon, tmp_path / "starts.jsonl", {"name": "chat", "gpu_memory_gb": 20})
    entry = ready_on(daemon, "multi.chat")
    node = entry["node"]
    agent = next(n for n in daemon.get("/v1/nodes").json()["nodes"] if n["name"] == node)["agent"]
    os.kill(agent["pid"], signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        now = next(n for n in daemon.get("/v1/nodes").json()["nodes"] if n["name"] == node)
        return now if now["agent"] and now["agent"]["pid"] != agent["pid"] else None

    daemon.wait_for(replaced, 30, f"a new agent on {node}")
    daemon.wait_for(lambda: _has_event(daemon, "multi.chat", "adopted"), 10, "adoption")
    after = daemon.engine("multi.chat")
    assert (after["pid"], after["restarts"], after["state"]) == (entry["pid"], 0, "ready")
    # The new agent watches it: its exit is seen and restarted as before.
    os.kill(entry["pid"], signal.SIGKILL)
    daemon.wait_for(
        lambda: daemon.engine("multi.chat")["restarts"] == 1, 10, "a restart through the new agent"
    )


def test_the_gateway_serves_a_model_whose_only_replica_is_on_another_node(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    port = free_port()
    daemon = make_daemon(gateway={"enabled": True, "port": port})
    declare(daemon, tmp_path / "starts.jsonl", {"name": "chat", "gpu_memory_gb": 20})
    entry = ready_on(daemon, "multi.chat")
    assert entry["node"] != "head"
    node = next(n for n in daemon.get("/v1/nodes").json()["nodes"] if n["name"] == entry["node"])
    table = daemon.get("/v1/routes", headers=daemon.auth()).json()
    route = next(e for e in table["engines"] if e["id"] == "multi.chat")
    assert route["url"] == f"http://{node['address']}:{entry['port']}"

    def answered() -> httpx.Response | None:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "fake/model-1B", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            )
        except httpx.TransportError:
            return None
        return response if response.status_code == 200 else None

    response = daemon.wait_for(answered, 30, "a chat answer through the gateway")
    assert response.json()["choices"][0]["message"]["content"]


def test_a_daemon_sigkill_and_restart_adopt_the_engines_of_every_node(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    daemon = make_daemon()
    record = tmp_path / "starts.jsonl"
    # Two GPUs each: one engine fills a node, so the second goes to the other node; one
    # without GPUs runs on the daemon's own machine (the head), as without a cluster.
    declare(
        daemon,
        record,
        {"name": "one", "gpu_memory_gb": 60, "tensor_parallel": 2},
        {"name": "two", "gpu_memory_gb": 60, "tensor_parallel": 2},
        {"name": "cpu", "use_gpu": False},
    )
    ids = ("multi.one", "multi.two", "multi.cpu")
    before = {engine_id: daemon.wait_state(engine_id, "ready", 30) for engine_id in ids}
    nodes = [before[i]["node"] for i in ids]
    assert sorted(nodes[:2]) == ["node-b", "node-c"] and nodes[2] is None, nodes
    daemon.stop(signal.SIGKILL)
    assert all(psutil.pid_exists(entry["pid"]) for entry in before.values())
    daemon.start()
    for engine_id, entry in before.items():
        after = daemon.wait_state(engine_id, "ready", 30)
        assert (after["pid"], after["node"], after["restarts"]) == (
            entry["pid"],
            entry["node"],
            0,
        )
        assert any(event["type"] == "adopted" for event in daemon.events(engine_id))
    assert len(records(record)) == 3  # adoption started nothing


def placement_groups(cluster: Any, namespace: str) -> dict[str, Any]:
    """The cluster's placement groups by name, as a separate Ray driver sees them."""
    script = (
        "import json, ray\n"
        "from ray.util import placement_group_table\n"
        f"ray.init(address={cluster.address!r}, namespace={namespace!r}, log_to_driver=False)\n"
        "print(json.dumps({t['name']: t['state'] for t in placement_group_table().values()}))\n"
    )
    env = {**os.environ, **cluster.env}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_engine_spanning_two_nodes_runs_in_one_placement_group_with_bundles_on_both(
    make_daemon: Callable[..., Daemon], cluster: Any, tmp_path: Path
):
    daemon = make_daemon()
    record = tmp_path / "starts.jsonl"
    big = {"name": "big", "gpu_memory_gb": 60, "tensor_parallel": 2, "pipeline_parallel": 2}
    declare(daemon, record, {**big, "nodes": 2})
    entry = ready_on(daemon, "multi.big", 60)
    start = records(record)[-1]
    argv = start["argv"]
    # vLLM's layout: tensor parallel within a node, pipeline parallel across nodes.
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    env = start["env"]
    assert "CUDA_VISIBLE_DEVICES" not in env  # Ray gives each worker its GPU
    nodes = {n["name"]: n for n in daemon.get("/v1/nodes").json()["nodes"]}
    assert env["VLLM_HOST_IP"] == nodes[entry["node"]]["address"]
    assert env["RAY_ADDRESS"].rpartition(":")[2] == cluster.address.rpartition(":")[2]
    group = start["placement_group"]
    # The group sagellm made, not one of the engine's own: a bundle per GPU on the nodes
    # the placement chose, the leader's node first.
    assert group["existing"] is True and group["name"] == "sagellm-pg-multi.big"
    assert group["bundles"] == 4
    assert sorted(group["bundle_nodes"]) == ["node-b", "node-b", "node-c", "node-c"]
    assert group["bundle_nodes"][0] == entry["node"] == env["SAGELLM_NODE"]
    namespace = daemon.config["cluster"]["namespace"]
    assert placement_groups(cluster, namespace).get("sagellm-pg-multi.big") == "CREATED"
    # Removing the engine removes its group (Ray's GPUs are free for the next one).
    assert daemon.delete("/v1/presets/multi").status_code in (200, 202)
    daemon.wait_for(
        lambda: daemon.get("/v1/engines/multi.big").status_code == 404, 30, "multi.big gone"
    )
    assert placement_groups(cluster, namespace).get("sagellm-pg-multi.big") in (None, "REMOVED")


def power_off(daemon: Daemon, cluster: Any, node: str) -> None:
    """A node loses power: its agent, its engines and its raylet die at once. (Ray's own
    removal kills only Ray's processes, and the agent would report its engines' deaths.)"""
    entry = next(n for n in daemon.get("/v1/nodes").json()["nodes"] if n["name"] == node)
    os.kill(entry["agent"]["pid"], signal.SIGKILL)
    for process in psutil.process_iter():
        try:
            env = process.environ()
        except psutil.Error:
            continue
        if env.get("SAGELLM_HOME") == str(daemon.home) and env.get("SAGELLM_NODE") == node:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    cluster.remove_node(node)


def test_a_lost_node_s_engines_are_placed_elsewhere_or_pend_naming_the_nodes(
    make_daemon: Callable[..., Daemon], cluster: Any, tmp_path: Path
):
    # Nodes of its own (this test removes them): with node-b and node-c, four nodes of two
    # GPUs, for three engines of two GPUs each.
    for name in ("node-d", "node-e"):
        cluster.add_node(name, gpus="simulate:2x80", num_gpus=2)
    daemon = make_daemon()
    ids = ("multi.one", "multi.two", "multi.three")
    declare(
        daemon,
        tmp_path / "starts.jsonl",
        *({"name": i.split(".")[1], "gpu_memory_gb": 60, "tensor_parallel": 2} for i in ids),
    )
    placed = {engine_id: ready_on(daemon, engine_id)["node"] for engine_id in ids}
    assert len(set(placed.values())) == 3
    mine = [engine_id for engine_id, node in placed.items() if node in ("node-d", "node-e")]
    assert mine, placed

    # One node lost, one node free: its engine goes there.
    first = mine[0]
    gone = placed[first]
    removed_at = time.monotonic()
    power_off(daemon, cluster, gone)
    daemon.wait_for(lambda: _has_event(daemon, first, "lost"), 30, f"{first} lost with {gone}")
    lost_after = time.monotonic() - removed_at
    moved = daemon.wait_state(first, "ready", 30)
    print(
        f"\nnode {gone} removed -> {first} lost after {lost_after:.2f} s,"
        f" ready on {moved['node']} after {time.monotonic() - removed_at:.2f} s"
    )
    assert moved["node"] not in (gone, *placed.values())
    # Its death is not the engine's failure: no backoff, no failed rollout.
    assert moved["restarts"] == 1, [e["message"] for e in daemon.events(first)]
    node_lost = [e for e in daemon.events() if e["type"] == "node_lost"]
    assert node_lost and gone in node_lost[-1]["message"] and first in node_lost[-1]["message"]

    # Another node lost and no room left: its engine waits, saying why on every node.
    # (node-b or node-c may go: this is the module's last test.)
    second = next(engine_id for engine_id in ids if engine_id != first)
    other = daemon.engine(second)["node"]
    power_off(daemon, cluster, other)
    pending = daemon.wait_state(second, "pending", 30)
    assert f"{gone}: dead" in pending["message"] and f"{other}: dead" in pending["message"]
    assert pending["message"].startswith("needs 2 GPUs x 60.0 GiB"), pending["message"]
    status = {n["name"]: n for n in daemon.get("/v1/status").json()["nodes"]}
    assert status[gone]["alive"] is False and status[other]["alive"] is False


def _has_event(daemon: Daemon, engine_id: str, type_: str) -> bool:
    return any(event["type"] == type_ for event in daemon.events(engine_id))
