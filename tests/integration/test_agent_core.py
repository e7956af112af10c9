"""Owns the tests of sagellmd/cluster/agent_core.py: the per-node agent's core without Ray,
driving real tests/fixtures/fake_vllm.py processes (issue 17, docs/multi-node.md)."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import sagellmd
from sagellmd.cluster.agent_core import AgentCore, AgentEvent
from tests.integration.conftest import FAKE_VLLM, engine_processes, free_port


class Node:
    """One simulated node: its home marker, log dir, and the event loop its agents use."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.logs = self.home / "logs"
        self.logs.mkdir(parents=True)
        self.record = tmp_path / "record.jsonl"
        self.loop = asyncio.new_event_loop()
        self.agents: list[AgentCore] = []

    def agent(self) -> AgentCore:
        agent = AgentCore("node-b", str(self.home), str(self.logs))
        self.agents.append(agent)
        return agent

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def start(self, agent: AgentCore, engine_id: str, **fake_env: str) -> tuple[int, int]:
        port = free_port()
        argv = [sys.executable, str(FAKE_VLLM), "--model", "fake/m", "--port", str(port)]
        env = {**os.environ, "FAKE_VLLM_RECORD": str(self.record), **fake_env}
        engine = self.run(agent.spawn(engine_id, argv, env, port))
        wait_healthy(port)
        return engine.pid, port

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]


def wait_healthy(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"engine on port {port} never became healthy")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def group_gone(pgid: int) -> bool:
    """No live (non-zombie) process left in the group."""
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except (psutil.Error, ProcessLookupError):
            continue
    return True


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    yield node
    for agent in node.agents:
        node.run(agent.release())
    for process in engine_processes(node.home):
        try:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.kill()
    for process in engine_processes(node.home):
        process.wait(5)
    node.loop.close()


def next_exit(node: Node, agent: AgentCore, timeout_s: float) -> list[AgentEvent]:
    return node.run(agent.next_events(timeout_s))


def test_a_spawned_engine_carries_its_markers_and_is_in_the_table(node: Node):
    agent = node.agent()
    pid, port = node.start(agent, "p.chat")
    [engine] = node.run(agent.engines())
    assert (engine.engine_id, engine.pid, engine.port) == ("p.chat", pid, port)
    assert abs(engine.started_at - psutil.Process(pid).create_time()) < 0.05
    [record] = node.records()
    assert record["pid"] == record["pgid"] == pid  # its own session: a group to stop
    assert record["env"]["SAGELLM_NODE"] == "node-b"
    assert record["env"]["SAGELLM_ENGINE_ID"] == "p.chat"
    assert record["env"]["SAGELLM_HOME"] == str(node.home)
    assert record["env"]["SAGELLM_ENGINE_RUN"] == engine.run
    assert (node.logs / "p.chat.log").exists()


def test_next_events_waits_and_returns_nothing_when_nothing_happens(node: Node):
    agent = node.agent()
    node.start(agent, "p.chat")
    started = time.monotonic()
    assert next_exit(node, agent, 0.2) == []
    assert time.monotonic() - started >= 0.19


def test_a_sigkilled_engine_is_an_exit_event_within_a_second(node: Node):
    agent = node.agent()
    pid, _ = node.start(agent, "p.chat")
    other, _ = node.start(agent, "p.other")

    async def kill_and_wait() -> tuple[list[AgentEvent], float]:
        pending = asyncio.ensure_future(agent.next_events(5.0))
        await asyncio.sleep(0.05)  # the call is pending, as the daemon's always is
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        events = await pending
        return events, time.monotonic() - killed

    events, took = node.run(kill_and_wait())
    assert took < 1.0
    assert [(e.kind, e.engine_id, e.pid, e.code, e.signal) for e in events] == [
        ("exited", "p.chat", pid, None, signal.SIGKILL)
    ]
    assert [e.engine_id for e in node.run(agent.engines())] == ["p.other"]
    assert not gone(other)


def test_stop_ends_the_whole_group_workers_included(node: Node):
    agent = node.agent()
    pid, _ = node.start(agent, "p.chat", FAKE_VLLM_FORK_CHILD="1", FAKE_VLLM_IGNORE_SIGTERM="1")
    [record] = node.records()
    worker = record["child_pid"]
    assert os.getpgid(worker) == pid
    assert node.run(agent.stop("p.chat", 0.3))
    events = next_exit(node, agent, 5.0)
    assert [(e.engine_id, e.signal) for e in events] == [("p.chat", signal.SIGKILL)]
    assert gone(pid) and gone(worker) and group_gone(pid)
    assert node.run(agent.engines()) == []
    assert not node.run(agent.stop("p.chat", 0.3))  # nothing left to stop


def test_a_new_agent_adopts_the_running_engines_without_restarting_them(node: Node):
    first = node.agent()
    chat, chat_port = node.start(first, "p.chat")
    embed, embed_port = node.start(first, "p.embed")
    before = {e.engine_id: e for e in node.run(first.engines())}
    node.run(first.release())  # the old daemon (or agent) is gone; the engines are not

    second = node.agent()
    adopted = node.run(second.adopt())
    assert [(e.engine_id, e.pid, e.port) for e in adopted] == [
        ("p.chat", chat, chat_port),
        ("p.embed", embed, embed_port),
    ]
    assert {e.engine_id: e.run for e in adopted} == {k: v.run for k, v in before.items()}
    assert len(node.records()) == 2  # no engine was started again
    assert node.run(second.strays()) == []
    wait_healthy(chat_port)

    # The adopted engines are watched: an exit is an event of the new agent.
    os.kill(embed, signal.SIGKILL)
    events = next_exit(node, second, 2.0)
    assert [(e.engine_id, e.pid) for e in events] == [("p.embed", embed)]


def test_adopting_what_the_store_knows_leaves_the_rest_as_strays_to_kill(node: Node):
    first = node.agent()
    chat, _ = node.start(first, "p.chat")
    old, _ = node.start(first, "p.old", FAKE_VLLM_FORK_CHILD="1")
    worker = node.records()[1]["child_pid"]
    node.run(first.release())

    second = node.agent()
    known = {"p.chat": (chat, psutil.Process(chat).create_time()), "p.old": (99999999, 0.0)}
    adopted = node.run(second.adopt(known))
    assert [e.engine_id for e in adopted] == ["p.chat"]
    strays = node.run(second.strays())
    assert sorted(s.pid for s in strays) == sorted([old, worker])
    assert {s.engine_id for s in strays} == {"p.old"}
    assert sorted(node.run(second.kill_strays())) == sorted([old, worker])
    deadline = time.monotonic() + 5
    while not (gone(old) and gone(worker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(old) and gone(worker) and not gone(chat)


def test_a_pid_with_another_create_time_is_not_adopted(node: Node):
    first = node.agent()
    chat, _ = node.start(first, "p.chat")
    node.run(first.release())
    second = node.agent()
    assert node.run(second.adopt({"p.chat": (chat, 1.0)})) == []
    assert [s.pid for s in node.run(second.strays())] == [chat]


def test_spawning_an_engine_id_twice_is_refused(node: Node):
    agent = node.agent()
    pid, _ = node.start(agent, "p.chat")
    with pytest.raises(ValueError, match=f"p.chat already runs on node-b \\(pid {pid}\\)"):
        node.run(agent.spawn("p.chat", [sys.executable, "-c", "pass"], dict(os.environ), None))


def test_the_agent_says_who_it_is(node: Node):
    about = node.run(node.agent().about())
    assert about["node"] == "node-b" and about["pid"] == os.getpid()
    assert about["sagellm"] == sagellmd.__version__
    assert about["python"] == platform.python_version()


def test_an_engine_may_inherit_the_agents_own_environment(node: Node, monkeypatch):
    monkeypatch.setenv("SAGELLM_AGENT_ONLY", "from-the-node")
    agent = node.agent()
    port = free_port()
    argv = [sys.executable, str(FAKE_VLLM), "--model", "fake/m", "--port", str(port)]
    given = {"FAKE_VLLM_RECORD": str(node.record), "PATH": os.environ["PATH"]}
    node.run(agent.spawn("p.bare", argv, given, port))
    node.run(agent.spawn("p.merged", [*argv[:-1], str(free_port())], given, None, True))
    deadline = time.monotonic() + 15
    while (not node.record.exists() or len(node.records()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    by_id = {r["env"]["SAGELLM_ENGINE_ID"]: r["env"] for r in node.records()}
    assert "SAGELLM_AGENT_ONLY" not in by_id["p.bare"]
    assert by_id["p.merged"]["SAGELLM_AGENT_ONLY"] == "from-the-node"
    assert "SAGELLM_ENGINE_PORT" not in by_id["p.merged"]  # no port given, none claimed


def test_a_rekeyed_engine_exits_under_its_new_key(node: Node):
    agent = node.agent()
    pid, _ = node.start(agent, "p.chat")
    other, _ = node.start(agent, "p.other")
    assert node.run(agent.rekey("p.chat", "p.chat#retiring"))
    assert [e.engine_id for e in node.run(agent.engines())] == ["p.chat#retiring", "p.other"]
    assert not node.run(agent.rekey("p.unknown", "p.x"))
    with pytest.raises(ValueError, match=f"p.other already runs on node-b \\(pid {other}\\)"):
        node.run(agent.rekey("p.chat#retiring", "p.other"))
    os.kill(pid, signal.SIGKILL)
    events = next_exit(node, agent, 5.0)
    assert [(e.engine_id, e.pid) for e in events] == [("p.chat#retiring", pid)]
    assert [e.engine_id for e in node.run(agent.engines())] == ["p.other"]


def test_inventory_reads_the_setting_and_lists_our_engines_with_their_workers(node: Node):
    agent = node.agent()
    pid, _ = node.start(agent, "p.chat", FAKE_VLLM_FORK_CHILD="1")
    worker = node.records()[0]["child_pid"]
    found = node.run(agent.inventory("simulate:80,24"))
    assert found.inventory.mode == "simulated"
    assert [d.total_bytes for d in found.inventory.devices] == [80 * 1024**3, 24 * 1024**3]
    assert {pid, worker} <= set(found.our_pids) and os.getpid() not in found.our_pids
    assert pickle.loads(pickle.dumps(found)) == found  # it crosses Ray
    assert node.run(agent.inventory("none")).inventory.devices == ()
