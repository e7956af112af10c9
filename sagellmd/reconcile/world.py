"""What the reconcile loop knows and holds: instances, processes, store, and how it records."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sagellmd.backoff import backoff_delay
from sagellmd.config import Settings
from sagellmd.desired import DesiredEngine
from sagellmd.disaggregation import INSTANCE_SEPARATOR
from sagellmd.events import EventHub
from sagellmd.gpu.inventory import GpuInventory
from sagellmd.gpu.placement import GpuView
from sagellmd.instance import Instance, InstanceState, Transition
from sagellmd.metrics import Metrics
from sagellmd.pd_expand import expand_desired, expand_engine
from sagellmd.runtime.logs import last_engine_line, log_path
from sagellmd.runtime.process import ProcessWatcher
from sagellmd.store.failures import is_storage_failure
from sagellmd.store.repository import Store

if TYPE_CHECKING:
    from sagellmd.cluster.host import ClusterHost
    from sagellmd.cluster.ray_backend import NodeAgent

log = logging.getLogger("sagellmd.reconcile")


@dataclass
class World:
    """The loop's shared state; `record` is the one place a transition is applied."""

    settings: Settings
    store: Store
    hub: EventHub
    watcher: ProcessWatcher
    clock: Callable[[], float] = time.time
    instances: dict[str, Instance] = field(default_factory=dict)
    wake: Callable[[], None] = lambda: None
    inventory: GpuInventory = field(default_factory=lambda: GpuInventory("none"))
    gpu_view: GpuView = field(default_factory=lambda: GpuView(()))
    metrics: Metrics = field(default_factory=Metrics)
    # Saves that failed on a full or broken disk, retried in order (`flush_unsaved`).
    unsaved: list[Callable[[], object]] = field(default_factory=list)
    # Engines the daemon itself wants (the gateway), planned over but never stored.
    own_engines: dict[str, DesiredEngine] = field(default_factory=dict)
    # The gateway's last activity report while it is fresh (demand, in-flight, last request).
    activity: Callable[[], Mapping[str, Any] | None] = lambda: None
    # The Ray cluster's nodes and agents (`cluster:` in config.yaml); None: this box alone.
    cluster: ClusterHost | None = None

    def _on_other_node(self, node: str | None) -> bool:
        """Whether `node` names a cluster node that is not the daemon's machine."""
        return node is not None and self.cluster is not None and not self.cluster.is_local(node)

    def node_suspect(self, node: str | None) -> bool:
        """Its node's agent stopped answering and Ray has not yet said the node is gone."""
        if node is None or self.cluster is None:
            return False
        status = self.cluster.nodes.get(node)
        return status is not None and (status.suspect or not status.node.alive)

    def agent_of(self, node: str | None) -> NodeAgent | None:
        """The agent hosting engines on `node`; None on the daemon's machine (or no agent)."""
        if not self._on_other_node(node):
            return None
        assert self.cluster is not None and node is not None
        status = self.cluster.nodes.get(node)
        return status.agent if status is not None else None

    def last_log_line(self, engine_id: str, node: str | None) -> str | None:
        """The last line an engine wrote; an engine on another node's, through its agent."""
        if not self._on_other_node(node):
            return last_engine_line(log_path(self.settings.logs_dir, engine_id))
        agent = self.agent_of(node)
        if agent is None:
            return None
        try:
            return agent.call("last_line", engine_id, timeout_s=5.0)
        except Exception:  # the node is going: the exit is recorded without the quote
            log.warning("engine=%s last log line from node %s not read", engine_id, node)
            return None

    def engine_host(self, node: str | None) -> str | None:
        """The address an engine on `node` listens on; None: the daemon's machine (loopback)."""
        if not self._on_other_node(node):
            return None
        assert self.cluster is not None and node is not None
        return self.cluster.engine_host(node)

    def desired(self) -> list[DesiredEngine]:
        """What the loop plans over: the stored desired state, disaggregated engines as their
        instances, and the daemon's own engines."""
        stored = [engine for engine in self.store.desired() if engine.id not in self.own_engines]
        return expand_desired(stored) + list(self.own_engines.values())

    def desired_engine(self, engine_id: str) -> DesiredEngine | None:
        """The desired engine a process runs as (an instance id of a disaggregated engine
        names its instance; the engine's own id names no process)."""
        own = self.own_engines.get(engine_id)
        if own is not None:
            return own
        stored = self.store.desired_engine(engine_id)
        if stored is not None and stored.spec.disaggregated is None:
            return stored
        group, dot, _ = engine_id.rpartition(INSTANCE_SEPARATOR)
        parent = self.store.desired_engine(group) if dot else None
        if parent is None or parent.spec.disaggregated is None:
            return None
        return next((e for e in expand_engine(parent) if e.id == engine_id), None)

    def record(
        self, transition: Transition, generation: int | None = None, intent: bool = False
    ) -> Instance:
        """Persist the new instance value with its event, keep it, then let watchers know.

        An `intent` (a start or stop about to be carried out) that cannot be persisted
        raises and changes nothing: nothing is done without a record of it. An
        observation (an exit, a probe result, a spawned pid) is a fact and is kept in
        memory even when the disk is full; persisting it is retried (`flush_unsaved`).
        """
        instance = transition.instance
        previous = self.instances.get(instance.engine_id)
        save = functools.partial(
            self.store.save_instance,
            instance,
            (transition.event_type, transition.message),
            generation if generation is not None else instance.generation,
            transition.details,
        )
        try:
            self.flush_unsaved()
            save()
        except Exception as exc:
            if intent:
                raise
            self.instances[instance.engine_id] = instance
            if not is_storage_failure(exc):
                raise
            self._save_later(save, instance.engine_id, exc)
        self.instances[instance.engine_id] = instance
        if (
            previous is not None
            and previous.state is InstanceState.STARTING
            and instance.state is InstanceState.READY
            and instance.started_at is not None
            and instance.ready_at is not None
        ):
            self.metrics.time_to_ready.observe(instance.ready_at - instance.started_at)
        log.info(
            "engine=%s event=%s state=%s pid=%s %s",
            instance.engine_id,
            transition.event_type,
            instance.state.value,
            instance.pid,
            transition.message,
        )
        if instance.state is InstanceState.BACKOFF and (
            previous is None or previous.state is not InstanceState.BACKOFF
        ):
            self._backoff_event(instance)
        self.hub.notify()
        return instance

    def _save_later(self, save: Callable[[], object], engine_id: str, exc: Exception) -> None:
        self.unsaved.append(save)
        log.warning("engine=%s not recorded yet, retried soon: %s", engine_id, exc)
        # The pass starts with flush_unsaved: a failing one is retried with a short backoff.
        self.wake()

    def flush_unsaved(self) -> None:
        """Persist, in order, what could not be persisted when it happened (a full disk)."""
        while self.unsaved:
            self.unsaved[0]()
            self.unsaved.pop(0)

    def _backoff_event(self, instance: Instance) -> None:
        """A crash loop is visible as such: when the next start comes, and why that late."""
        settings = self.settings
        delay = backoff_delay(instance.failures, settings.backoff_base_s, settings.backoff_max_s)
        when = "restarting now" if delay == 0 else f"next start in {delay:g}s"
        message = (
            f"{when} (failure {instance.failures} in a row; backoff"
            f" {settings.backoff_base_s:g}s doubling to {settings.backoff_max_s:g}s)"
        )
        add = functools.partial(
            self.store.add_event,
            instance.engine_id,
            "backoff",
            message,
            self.store.current_generation(),
        )
        if self.unsaved:
            self.unsaved.append(add)  # after the exit it follows, which waits for the disk too
        else:
            try:
                add()
            except Exception as exc:
                if not is_storage_failure(exc):
                    raise
                self.unsaved.append(add)
        log.info("engine=%s event=backoff %s", instance.engine_id, message)

    def event(self, engine: str | None, type_: str, message: str) -> None:
        self.store.add_event(engine, type_, message, self.store.current_generation())
        log.info("engine=%s event=%s %s", engine, type_, message)
        self.hub.notify()

    def forget(self, engine_id: str) -> None:
        self.instances.pop(engine_id, None)
        self.store.forget_instance(engine_id)
        self.hub.notify()  # readers keyed on the hub's version (the status document) see it
