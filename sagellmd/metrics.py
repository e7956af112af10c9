"""Prometheus metrics of the daemon: engines, restarts, readiness, passes, GPUs, API calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sagellmd.gpu.inventory import GpuInventory
from sagellmd.instance import Instance, InstanceState


class ObservedState(Protocol):
    """What the gauges read of the loop's state; the loop's World has both, and metrics
    must not import the loop that owns it (the loop imports metrics)."""

    @property
    def instances(self) -> Mapping[str, Instance]: ...

    @property
    def inventory(self) -> GpuInventory: ...


class _ObservedStateCollector(Collector):
    """Reads the loop's state at scrape time, so gauges are never stale."""

    def __init__(self, world: Callable[[], ObservedState | None]) -> None:
        self._world = world

    def collect(self) -> Iterator[Metric]:
        world = self._world()
        if world is None:
            return
        states = GaugeMetricFamily("sagellm_engines", "Engines by state.", labels=["state"])
        counts = {state.value: 0 for state in InstanceState}
        for instance in world.instances.values():
            counts[instance.state.value] += 1
        for state, count in counts.items():
            states.add_metric([state], count)
        yield states
        restarts = CounterMetricFamily(
            "sagellm_engine_restarts",
            "Automatic restarts after a crash, per engine.",
            labels=["engine"],
        )
        for instance in world.instances.values():
            restarts.add_metric([instance.engine_id], instance.restarts)
        yield restarts
        memory = GaugeMetricFamily(
            "sagellm_gpu_memory_bytes",
            "GPU memory: total, used (NVML) and reserved by engines.",
            labels=["gpu", "kind"],
        )
        for device in world.inventory.devices:
            reserved = sum(
                i.gpu_bytes
                for i in world.instances.values()
                if i.holds_gpus and device.index in i.gpus
            )
            for kind, value in (
                ("total", device.total_bytes),
                ("used", device.used_bytes),
                ("reserved", reserved),
            ):
                memory.add_metric([str(device.index), kind], value)
        yield memory


class Metrics:
    """One registry per daemon (not the process-global one), so tests stay independent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._world: ObservedState | None = None
        self.registry.register(_ObservedStateCollector(lambda: self._world))
        self.time_to_ready = Histogram(
            "sagellm_engine_time_to_ready_seconds",
            "From spawn to the first healthy probe.",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        self.pass_duration = Histogram(
            "sagellm_reconcile_pass_seconds",
            "Duration of one reconcile pass.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "sagellm_api_requests",
            "API requests by route and status.",
            labelnames=["route", "method", "status"],
            registry=self.registry,
        )

    def watch(self, world: ObservedState) -> None:
        self._world = world
