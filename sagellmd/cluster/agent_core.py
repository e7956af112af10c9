"""What the per-node agent does, without Ray: host this node's engine processes.

The design's agent (docs/multi-node.md) is a detached, named Ray async actor; Ray will wrap
this class (`ray.remote(num_cpus=0, max_restarts=0)(AgentCore)`), so every method that
touches processes is `async`, runs on the actor's event loop and returns plain picklable
data. It uses the daemon's runtime code as is: spawn in a new session, env markers, pidfd
exit watching, process-group and run-marker stops, identity by pid + create time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import signal
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from sagellmd import __version__
from sagellmd.gpu.accounting import process_tree
from sagellmd.gpu.inventory import GpuInventory, read_inventory
from sagellmd.runtime.logs import (
    LogChunk,
    LogTail,
    last_engine_line,
    log_path,
    read_after,
    read_tail,
)
from sagellmd.runtime.process import (
    ENGINE_MARKER,
    HOME_MARKER,
    NODE_MARKER,
    RUN_MARKER,
    MarkedProcess,
    Markers,
    ProcessWatcher,
    marked_processes,
    new_run_marker,
    signal_group,
    spawn,
)

PORT_MARKER = "SAGELLM_ENGINE_PORT"


@dataclass(frozen=True)
class AgentEngine:
    """One engine the agent watches; `started_at` is the process's create time."""

    engine_id: str
    pid: int
    port: int | None
    started_at: float
    run: str | None


@dataclass(frozen=True)
class AgentEvent:
    """Something the daemon must hear about; today only `exited`."""

    kind: str
    engine_id: str
    pid: int
    code: int | None
    signal: int | None
    at: float


@dataclass(frozen=True)
class NodeInventory:
    """A node's GPUs and the process tree of the engines its agent watches, so the daemon
    can tell memory our engines hold from foreign memory (gpu/accounting.capacities)."""

    inventory: GpuInventory
    our_pids: tuple[int, ...]


class AgentCore:
    """One node's engines: spawn, watch, stop, adopt; exits pushed through next_events."""

    def __init__(self, node: str, home: str, logs_dir: str) -> None:
        # No event loop is touched here: Ray runs an actor's __init__ outside its loop.
        self.node = node
        self.home = home
        self.logs_dir = Path(logs_dir)
        self._watcher: ProcessWatcher | None = None
        self._table: dict[str, AgentEngine] = {}
        self._events: list[AgentEvent] = []
        self._wake: asyncio.Event | None = None

    def _watch(self) -> ProcessWatcher:
        if self._watcher is None:
            self._watcher = ProcessWatcher(asyncio.get_running_loop(), self._exited)
            self._wake = asyncio.Event()
        return self._watcher

    def _exited(self, engine_id: str, pid: int, code: int | None, signum: int | None) -> None:
        self._table.pop(engine_id, None)
        self._events.append(AgentEvent("exited", engine_id, pid, code, signum, time.time()))
        assert self._wake is not None
        self._wake.set()

    async def about(self) -> dict[str, object]:
        """Who this agent is: the daemon refuses a node whose versions differ from its own."""
        return {
            "node": self.node,
            "pid": os.getpid(),
            "sagellm": __version__,
            "python": platform.python_version(),
        }

    async def spawn(
        self,
        engine_id: str,
        argv: list[str],
        env: Mapping[str, str],
        port: int | None,
        inherit_environ: bool = False,
    ) -> AgentEngine:
        """Start one engine run; its markers name this home, this run and this node, so a
        later agent finds it by its environment alone (adopt).

        `env` is the whole environment, as the daemon builds it today; with
        `inherit_environ` it is laid over this agent's own (a remote node's PATH, HOME and
        CUDA libraries are its own, not the daemon's).
        """
        watcher = self._watch()
        if engine_id in watcher:
            raise ValueError(
                f"{engine_id} already runs on {self.node} (pid {self._pid(engine_id)})"
            )
        base = dict(os.environ) if inherit_environ else {}
        env = {
            **base,
            **env,
            ENGINE_MARKER: engine_id,
            HOME_MARKER: self.home,
            NODE_MARKER: self.node,
        }
        env[RUN_MARKER] = new_run_marker()
        if port is not None:
            env[PORT_MARKER] = str(port)
        popen = spawn(argv, env, log_path(self.logs_dir, engine_id))
        try:
            process = watcher.watch_child(engine_id, popen, Markers.of(env))
        except OSError:
            popen.kill()
            popen.wait()
            raise
        engine = AgentEngine(engine_id, process.pid, port, process.create_time, env[RUN_MARKER])
        self._table[engine_id] = engine
        return engine

    def _pid(self, engine_id: str) -> int | None:
        engine = self._table.get(engine_id)
        return engine.pid if engine else None

    async def stop(self, engine_id: str, grace_s: float) -> bool:
        """SIGTERM to the engine's group and run now, SIGKILL after `grace_s`; the exit
        comes as an event. False if the agent does not watch it."""
        watcher = self._watch()
        if engine_id not in watcher:
            return False
        watcher.stop(engine_id, grace_s)
        return True

    async def kill(self, engine_id: str) -> bool:
        watcher = self._watch()
        if engine_id not in watcher:
            return False
        watcher.kill(engine_id)
        return True

    async def rekey(self, old: str, new: str) -> bool:
        """Watch the engine `old` under the key `new` (a surge: the old process retires as
        "ID#retiring" while a new one starts as "ID"); its later exit is an event of `new`.
        False if `old` is not watched."""
        watcher = self._watch()
        if old not in watcher:
            return False
        if new in watcher:
            # Rekeying onto a watched engine would leave that one's pidfd unwatched.
            raise ValueError(f"{new} already runs on {self.node} (pid {self._pid(new)})")
        watcher.rekey(old, new)
        engine = self._table.pop(old, None)
        if engine is not None:
            self._table[new] = dataclasses.replace(engine, engine_id=new)
        return True

    async def inventory(self, setting: str) -> NodeInventory:
        """This node's GPUs for the `gpus` setting (auto, none, simulate:2x80) and the
        pids of the watched engines and their descendants (vLLM's workers hold memory)."""
        pids = process_tree(engine.pid for engine in self._table.values())
        return NodeInventory(read_inventory(setting), tuple(sorted(pids)))

    async def engines(self) -> list[AgentEngine]:
        """The table a (new) daemon adopts from: every engine watched now."""
        return sorted(self._table.values(), key=lambda engine: engine.engine_id)

    async def next_events(self, timeout_s: float) -> list[AgentEvent]:
        """What happened since the last call; waits up to `timeout_s` for something.

        The daemon keeps one such call pending per agent: over Ray it returns as soon as
        an engine exits, like the gateway's long-poll over HTTP.
        """
        self._watch()
        assert self._wake is not None
        if not self._events:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                pass
        events, self._events = self._events, []
        self._wake.clear()
        return events

    async def adopt(
        self, known: Mapping[str, tuple[int, float]] | None = None
    ) -> list[AgentEngine]:
        """Watch the engines of this home already running here (a new agent, or a daemon
        that lost the old one): `known` (engine id -> pid, create time, from the daemon's
        store) if given, else every marked engine leader, the newest run per engine.
        What is not adopted stays a stray (see `strays`)."""
        watcher = self._watch()
        leaders = [p for p in marked_processes(self.home, self.node) if p.pid == p.pgid]
        chosen: dict[str, MarkedProcess] = {}
        for leader in leaders:  # oldest first: a newer run of one engine replaces it
            if known is None or known.get(leader.engine_id, (None, None))[0] == leader.pid:
                chosen[leader.engine_id] = leader
        adopted = []
        for engine_id, leader in chosen.items():
            if engine_id in watcher:
                continue
            if known is not None and abs(known[engine_id][1] - leader.create_time) > 0.05:
                continue  # a reused pid, not the engine the store knows
            process = watcher.adopt(engine_id, leader.pid, leader.create_time)
            if process is None:
                continue
            engine = AgentEngine(
                engine_id, leader.pid, _port_of(leader.pid), leader.create_time, leader.run
            )
            self._table[engine_id] = engine
            adopted.append(engine)
        return sorted(adopted, key=lambda engine: engine.engine_id)

    async def read_tail(self, engine_id: str, count: int) -> LogTail:
        """The last `count` lines of an engine's log on this node (`sagellm engine logs`)."""
        path = log_path(self.logs_dir, engine_id)
        return await asyncio.to_thread(read_tail, path, count)

    async def read_after(self, engine_id: str, offset: int) -> LogChunk:
        """The complete lines of an engine's log after byte `offset` (a log followed)."""
        path = log_path(self.logs_dir, engine_id)
        return await asyncio.to_thread(read_after, path, offset)

    async def last_line(self, engine_id: str) -> str | None:
        """What an engine that failed said last: its exit's message quotes it."""
        return last_engine_line(log_path(self.logs_dir, engine_id))

    async def strays(self) -> list[MarkedProcess]:
        """Marked processes of this home whose run no watched engine has: engines the
        daemon no longer wants, or workers that outlived their engine."""
        runs = {engine.run for engine in self._table.values() if engine.run}
        return [p for p in marked_processes(self.home, self.node) if p.run not in runs]

    async def kill_strays(self, only: Collection[int] | None = None) -> list[int]:
        """SIGKILL the groups of the strays (those with a pid in `only`, if given)."""
        killed = []
        for stray in await self.strays():
            if only is not None and stray.pid not in only:
                continue
            # Never our own group: the agent is not in an engine's session, but a marker
            # copied into the agent's environment by hand must not make it kill itself.
            if stray.pgid == os.getpgrp():
                continue
            if not signal_group(stray.pgid, signal.SIGKILL):
                with contextlib.suppress(psutil.Error):
                    psutil.Process(stray.pid).kill()
            killed.append(stray.pid)
        return killed

    async def release(self) -> None:
        """Stop watching, leave the processes running (the agent is going away)."""
        if self._watcher is not None:
            self._watcher.release_all()
        self._table.clear()


def _port_of(pid: int) -> int | None:
    try:
        value = psutil.Process(pid).environ().get(PORT_MARKER, "")
    except psutil.Error:
        return None
    return int(value) if value.isdigit() else None
