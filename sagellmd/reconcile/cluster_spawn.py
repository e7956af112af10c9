"""The executor's cluster parts: where a start runs, an engine spanning nodes, a start
through another node's agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from sagellmd.cluster.ray_backend import AgentUnreachable
from sagellmd.cluster.ray_groups import group_name
from sagellmd.cluster.watcher import ClusterWatcher
from sagellmd.desired import DesiredEngine
from sagellmd.gpu.cluster_placement import locate
from sagellmd.gpu.node_view import SpreadPlaced
from sagellmd.instance import Instance, spawned
from sagellmd.models.last_used import touch_model
from sagellmd.reconcile.actions import Start
from sagellmd.reconcile.hub_check import HubCheck
from sagellmd.runtime.argv import GpuAssignment
from sagellmd.runtime.kinds.base import RuntimeKind
from sagellmd.runtime.kinds.vllm_ray import ray_executor_launch

if TYPE_CHECKING:
    from sagellmd.reconcile.observe import Prober
    from sagellmd.reconcile.world import World

Launch = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


class ClusterSpawn:
    """Mixed into Executor, whose _begin_start, _model_available, _spawn and _spawn_failed
    these use."""

    _world: World
    _prober: Prober

    def _forget_group(self, engine_id: str) -> None:
        """An engine that spanned nodes leaves no placement group holding Ray's GPUs."""
        instance, host = self._world.instances.get(engine_id), self._world.cluster
        if instance is not None and instance.spans and host is not None:
            host.remove_group(group_name(engine_id))

    def _start_spread(
        self,
        engine: DesiredEngine,
        generation: int,
        action: Start,
        spread: SpreadPlaced,
        port: int,
        kind: RuntimeKind,
        hub: HubCheck | None,
    ) -> None:
        """An engine across nodes: its placement group, then its leader (vLLM's API server)
        on the first bundle's node, which starts the workers through Ray."""
        world, host = self._world, self._world.cluster
        assert host is not None
        leader = spread.shares[0]
        node = None if host.is_local(leader.node) else leader.node
        spans = tuple((share.node, share.gpus) for share in spread.shares)
        local = replace(action, gpus=leader.gpus)
        starting = self._begin_start(engine, generation, local, port, (), node, spans)
        if not self._model_available(starting, engine.spec, kind, hub):
            return
        name = group_name(engine.id)
        try:
            group_id = host.create_group(name, spread.placement_group())
        except Exception as exc:
            self._spawn_failed(starting, engine.spec.restart, f"placement group {name}: {exc}")
            return
        world.event(
            engine.id,
            "placed",
            f"placement group {name}: {len(spread.bundle_nodes)} GPU bundles on"
            f" {', '.join(spread.bundle_nodes)}",
        )
        fraction = spread.per_gpu_bytes / action.gpu_bytes if action.gpu_bytes else 0.9
        host_ip = world.engine_host(node) or host.engine_host(leader.node)
        ray_address = host.gcs_address()

        def launch(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
            return ray_executor_launch(argv, env, engine.spec, group_id, ray_address, host_ip)

        self._spawn(engine, starting, port, GpuAssignment((), fraction), kind, launch)

    def _node_of(self, gpus: tuple[int, ...]) -> tuple[str | None, tuple[int, ...]]:
        """The node a start's GPUs are on (None: the daemon's machine), and its own indices."""
        world = self._world
        if not gpus or world.cluster is None or not world.gpu_view.nodes:
            return None, gpus
        node, local = locate(gpus, world.gpu_view.nodes)
        return (None if world.cluster.is_local(node) else node), local

    def _spawn_remote(
        self,
        engine: DesiredEngine,
        starting: Instance,
        argv: list[str],
        env: dict[str, str],
        kind: RuntimeKind,
    ) -> None:
        """Start the process through its node's agent, which watches it there."""
        world, node = self._world, starting.node
        assert node is not None and isinstance(world.watcher, ClusterWatcher)
        try:
            process = world.watcher.spawn_remote(node, engine.id, argv, env, starting.port)
        except AgentUnreachable as exc:
            reason = f"node {node}: its agent did not answer ({exc.detail})"
            self._spawn_failed(starting, engine.spec.restart, reason)
            return
        except Exception as exc:  # the agent's spawn failed: no such file, a bad env value
            reason = f"{argv[0] if argv else 'the engine'} on node {node}: {describe(exc)}"
            self._spawn_failed(starting, engine.spec.restart, reason)
            return
        world.record(spawned(starting, process.pid, process.create_time, kind.health_path))
        touch_model(world.settings.home, engine.spec.model)
        self._prober.start(engine.id, process.pid)
