"""The process watcher of a daemon on a cluster: its own machine's engines as before (pidfd
here), other nodes' engines through their agents, whose exits arrive as agent events."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sagellmd.cluster.ray_backend import AgentUnreachable, NodeAgent
from sagellmd.runtime.process import ExitCallback, ProcessWatcher

log = logging.getLogger(__name__)

# A control call (spawn, stop) to a live agent takes milliseconds; a node that stopped
# answering is declared dead by Ray within seconds, so the loop never waits long on one.
CONTROL_TIMEOUT_S = 5.0


@dataclass
class RemoteProcess:
    """An engine process another node's agent hosts and watches."""

    key: str
    node: str
    pid: int
    create_time: float
    stopping: bool = False


class ClusterWatcher(ProcessWatcher):
    """`ProcessWatcher` for the daemon's machine, plus the engines of the other nodes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_exit: ExitCallback) -> None:
        super().__init__(loop, on_exit)
        self._remote: dict[str, RemoteProcess] = {}
        self._agents: dict[str, NodeAgent] = {}

    def use_agent(self, agent: NodeAgent) -> None:
        self._agents[agent.node] = agent

    def drop_agent(self, node: str) -> None:
        self._agents.pop(node, None)

    def __contains__(self, key: str) -> bool:
        return key in self._remote or super().__contains__(key)

    def remote(self, key: str) -> RemoteProcess | None:
        return self._remote.get(key)

    def remote_on(self, node: str) -> list[RemoteProcess]:
        return [process for process in self._remote.values() if process.node == node]

    def _agent(self, node: str) -> NodeAgent:
        agent = self._agents.get(node)
        if agent is None:
            raise AgentUnreachable(node, f"no agent on node {node} (it is not alive)")
        return agent

    def spawn_remote(
        self, node: str, key: str, argv: list[str], env: dict[str, str], port: int | None
    ) -> RemoteProcess:
        """Start an engine on `node`; its agent watches it from now on."""
        engine = self._agent(node).call("spawn", key, argv, env, port, timeout_s=CONTROL_TIMEOUT_S)
        return self.track(node, key, engine.pid, engine.started_at)

    def track(self, node: str, key: str, pid: int, create_time: float) -> RemoteProcess:
        """Take into account a process the node's agent watches (spawned or adopted)."""
        process = RemoteProcess(key, node, pid, create_time)
        self._remote[key] = process
        return process

    def untrack(self, key: str) -> RemoteProcess | None:
        return self._remote.pop(key, None)

    def exited(self, node: str, key: str, pid: int, code: int | None, signum: int | None) -> None:
        """An agent's exit event: the same callback as a local pidfd exit."""
        process = self._remote.get(key)
        if process is None or process.node != node or process.pid != pid:
            return  # an older run, or one already counted as lost with its node
        del self._remote[key]
        self._on_exit(key, pid, code, signum)

    def stop(self, engine_id: str, grace_s: float) -> None:
        process = self._remote.get(engine_id)
        if process is None:
            super().stop(engine_id, grace_s)
            return
        process.stopping = True
        self._control(process, "stop", engine_id, grace_s)

    def kill(self, engine_id: str) -> None:
        process = self._remote.get(engine_id)
        if process is None:
            super().kill(engine_id)
            return
        self._control(process, "kill", engine_id)

    def is_stopping(self, engine_id: str) -> bool:
        process = self._remote.get(engine_id)
        if process is None:
            return super().is_stopping(engine_id)
        return process.stopping

    def rekey(self, old: str, new: str) -> None:
        process = self._remote.pop(old, None)
        if process is None:
            super().rekey(old, new)
            return
        process.key = new
        self._remote[new] = process
        self._control(process, "rekey", old, new)

    def engine_ids(self) -> list[str]:
        return super().engine_ids() + list(self._remote)

    def release_all(self) -> None:
        # The agents keep watching their engines: a new daemon finds them there.
        super().release_all()
        self._remote.clear()

    def _control(self, process: RemoteProcess, method: str, *args: object) -> None:
        try:
            self._agent(process.node).call(method, *args, timeout_s=CONTROL_TIMEOUT_S)
        except AgentUnreachable as exc:
            # Its node is going: the node's loss ends the process's record.
            log.warning(
                "engine=%s %s on node %s failed: %s", process.key, method, exc.node, exc.detail
            )
