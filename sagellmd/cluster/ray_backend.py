"""The Ray adapter of the cluster mode (issue 17, docs/multi-node.md): the daemon as a Ray
driver, one detached named agent actor per node wrapping AgentCore.

The only module of sagellm that imports ray, and only when a cluster is configured
(import_ray, called from RayCluster): tests/unit/test_no_ray_import.py checks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sagellmd.cluster.agent_core import AgentCore
from sagellmd.cluster_config import GPUS_LABEL, NODE_LABEL, ClusterSettings, node_labels
from sagellmd.errors import ConfigError, SagellmError

AGENT_PREFIX = "sagellm-agent-"
# A dead GCS address must fail in seconds: the daemon's start says so (exit 1).
DEFAULT_CONNECT_TIMEOUT_S = 5.0


class ClusterUnreachable(SagellmError):
    code = "cluster_unreachable"
    http_status = 503
    exit_code = 1


class NodeUnreachable(SagellmError):
    """An API answer needs a node whose agent does not answer (its engine's log, say)."""

    code = "node_unreachable"
    http_status = 503


class AgentUnreachable(Exception):
    """A call to a node's agent failed in Ray (actor or node dead, timeout), not in the
    agent's own code: the daemon treats the node's engines as unknown until it answers."""

    def __init__(self, node: str, detail: str) -> None:
        super().__init__(f"agent on {node} unreachable: {detail}")
        self.node = node
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.detail))


def import_ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError("cluster: needs Ray: pip install 'sagellm[ray]'") from None


@dataclass(frozen=True)
class ClusterNode:
    name: str  # label sagellm.node, else NodeManagerAddress (cluster_config.node_labels)
    ray_node_id: str  # hex
    address: str  # NodeManagerAddress
    alive: bool
    gpus: str  # the node's GPU setting: label sagellm.gpus, else "auto"
    ray_gpus: float  # Ray's logical GPU resource count
    message: str | None = None  # set when the node is unusable (a bad label): says why


def cluster_node(info: dict[str, Any]) -> ClusterNode:
    """One entry of ray.nodes() as sagellm sees it; a bad label makes it unusable."""
    labels = info.get("Labels") or {}
    address = info.get("NodeManagerAddress", "")
    message = None
    try:
        name = node_labels(labels, address).name
        gpus = labels.get(GPUS_LABEL, "auto").strip()
    except ConfigError as exc:
        message = exc.message
        gpus = "none"
        try:  # the name may be fine and only the GPU label bad
            name = node_labels({NODE_LABEL: labels.get(NODE_LABEL, "")}, address).name
        except ConfigError:
            name = address
    return ClusterNode(
        name=name,
        ray_node_id=info["NodeID"],
        address=address,
        alive=bool(info.get("Alive")),
        gpus=gpus,
        ray_gpus=float((info.get("Resources") or {}).get("GPU", 0.0)),
        message=message,
    )


def one_per_name(infos: list[dict[str, Any]]) -> list[ClusterNode]:
    """The alive node of each name, else its newest dead one; two alive nodes of one
    name make it unusable (they would share one agent name)."""
    chosen: dict[str, tuple[ClusterNode, dict[str, Any]]] = {}
    for info in infos:
        node = cluster_node(info)
        held = chosen.get(node.name)
        if held is None:
            chosen[node.name] = (node, info)
        elif node.alive and held[0].alive:
            message = (
                f"node {node.name}: two live Ray nodes carry this name ({held[0].address},"
                f" {node.address}); give each its own label {NODE_LABEL}"
            )
            chosen[node.name] = (dataclasses.replace(held[0], message=message), held[1])
        elif node.alive or (not held[0].alive and _ended(info) > _ended(held[1])):
            chosen[node.name] = (node, info)
    return sorted((node for node, _ in chosen.values()), key=lambda node: node.name)


def _ended(info: dict[str, Any]) -> float:
    return float(info.get("EndTimeMs") or info.get("StartTimeMs") or 0)


class NodeAgent:
    """A handle on one node's agent actor; Ray failures become AgentUnreachable."""

    def __init__(self, ray: ModuleType, node: str, actor: Any) -> None:
        self._ray = ray
        self.node = node
        self._actor = actor
        self.dead = False  # the actor died: RayCluster.agent() makes a new handle

    def _submit(self, method: str, args: tuple[Any, ...]) -> Any:
        try:
            return getattr(self._actor, method).remote(*args)
        except AttributeError:
            raise
        except Exception as exc:  # Ray not connected, the handle unusable
            raise AgentUnreachable(self.node, f"{method}: {type(exc).__name__}: {exc}") from exc

    def call(self, method: str, *args: Any, timeout_s: float = 10.0) -> Any:
        ref = self._submit(method, args)
        try:
            return self._ray.get(ref, timeout=timeout_s)
        except Exception as exc:
            raise self._mapped(method, exc, timeout_s) from exc

    async def call_async(self, method: str, *args: Any, timeout_s: float) -> Any:
        ref = self._submit(method, args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except Exception as exc:
            raise self._mapped(method, exc, timeout_s) from exc

    def _mapped(self, method: str, exc: Exception, timeout_s: float) -> Exception:
        """The agent's own exception (ValueError from spawn) as itself; Ray's as
        AgentUnreachable."""
        exceptions = self._ray.exceptions
        if isinstance(exc, exceptions.RayTaskError) and not isinstance(
            exc, exceptions.RayActorError
        ):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception) and not isinstance(cause, exceptions.RayError):
                return cause
        if isinstance(exc, TimeoutError | exceptions.GetTimeoutError):
            return AgentUnreachable(self.node, f"{method}: no answer within {timeout_s:g} s")
        if isinstance(exc, exceptions.ActorDiedError):
            self.dead = True
        if isinstance(exc, exceptions.RayError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return AgentUnreachable(self.node, f"{method}: {type(exc).__name__}: {first}")
        return exc


class RayCluster:
    """The daemon's side of the cluster: connect, list nodes, get each node's agent."""

    def __init__(
        self,
        settings: ClusterSettings,
        home: str,
        logs_dir: str,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.home = home
        self.logs_dir = logs_dir
        self.connect_timeout_s = connect_timeout_s
        self._ray: ModuleType | None = None
        self._agent_class: Any = None
        self._agents: dict[tuple[str, str], NodeAgent] = {}

    @property
    def ray(self) -> ModuleType:
        if self._ray is None:
            raise RuntimeError("RayCluster.connect() was not called")
        return self._ray

    def connect(self) -> None:
        ray = import_ray()
        address = self.settings.address
        # "auto" is Ray's lookup (RAY_ADDRESS, else this node's cluster) and fails when
        # there is none: the daemon never starts a Ray instance of its own (ray.init with
        # address=None would).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        target = self._resolved(ray, address)
        # ray.init retries a dead GCS address for minutes (GcsClient blocks): a plain TCP
        # connect first makes a wrong or stale address an error in seconds.
        self._reachable(address, target)
        try:
            ray.init(
                address=target,
                namespace=self.settings.namespace,
                log_to_driver=False,
                logging_level="WARNING",
                configure_logging=False,
            )
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise ClusterUnreachable(
                f"cluster: cannot reach the Ray cluster at {address}: {text}",
                {"address": address, "error": type(exc).__name__},
            ) from None
        self._ray = ray

    @staticmethod
    def _resolved(ray: ModuleType, address: str) -> str:
        """HOST:PORT; "auto" looked up as Ray does (RAY_ADDRESS, else the address file of
        the last `ray start` on this node)."""
        if address != "auto":
            return address
        try:
            found = ray._private.services.canonicalize_bootstrap_address(address)
        except Exception as exc:  # ConnectionError: no running Ray instance
            found, error = None, str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        else:
            error = "no running Ray cluster found (RAY_ADDRESS unset, no ray start here)"
        if not found:
            raise ClusterUnreachable(
                f"cluster: cannot reach the Ray cluster at auto: {error}",
                {"address": address, "error": "not_found"},
            )
        return str(found)

    def _reachable(self, address: str, target: str) -> None:
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), self.connect_timeout_s):
                pass
        except (OSError, ValueError) as exc:
            where = address if address == target else f"{address} ({target})"
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ClusterUnreachable(
                f"cluster: cannot reach the Ray cluster at {where}: {reason}",
                {"address": target, "error": type(exc).__name__},
            ) from None

    def local_node_id(self) -> str:
        return str(self.ray.get_runtime_context().get_node_id())

    def nodes(self) -> list[ClusterNode]:
        return one_per_name(self.ray.nodes())

    def agent(self, node: ClusterNode) -> NodeAgent:
        key = (node.name, node.ray_node_id)
        held = self._agents.get(key)
        if held is not None and not held.dead:
            return held
        ray = self.ray
        if self._agent_class is None:
            self._agent_class = ray.remote(num_cpus=0, max_restarts=0)(AgentCore)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._agent_class.options(
            name=AGENT_PREFIX + node.name,
            namespace=self.settings.namespace,
            lifetime="detached",
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.ray_node_id, soft=False),
            # Ray kills a worker's child processes when the worker exits; the engines must
            # outlive their agent as they outlive the daemon, for the next agent to adopt.
            runtime_env={"env_vars": {"RAY_kill_child_processes_on_worker_exit": "0"}},
        ).remote(node.name, self.home, self.logs_dir)
        agent = NodeAgent(ray, node.name, actor)
        self._agents[key] = agent
        return agent

    def shutdown(self) -> None:
        """Leave the cluster; the detached agents and their engines live on."""
        self._agents.clear()
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None
