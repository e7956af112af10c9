"""Turns the inventory, memory estimates and our own processes into what placement sees."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.estimate import EstimateError, EstimateSettings, MemoryEstimate
from sagellmd.gpu.inventory import GpuInventory
from sagellmd.gpu.placement import GpuCapacity, GpuView
from sagellmd.runtime.kinds import kind_for, wants_gpu


def process_tree(pids: Iterable[int]) -> set[int]:
    """The engines' pids and all their descendants (vLLM's workers hold the memory)."""
    tree: set[int] = set()
    for pid in pids:
        tree.add(pid)
        try:
            tree.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return tree


def capacities(inventory: GpuInventory, our_pids: set[int]) -> tuple[GpuCapacity, ...]:
    """Each GPU's size and the memory that processes we did not start hold on it."""
    result = []
    for device in inventory.devices:
        foreign = sum(p.used_bytes for p in device.processes if p.pid not in our_pids)
        result.append(GpuCapacity(device.index, device.total_bytes, foreign))
    return tuple(result)


class EstimateCache:
    """Estimates read files (safetensors headers, config.json): once per spec hash.

    Only figures from the files (or the spec) are kept: one from the model's name, or no
    figure at all, is worked out again each time, so a model downloaded later is measured
    by its weights from then on.
    """

    def __init__(self, settings: EstimateSettings) -> None:
        self._settings = settings
        self._by_hash: dict[str, MemoryEstimate | str] = {}

    def get(self, engine: DesiredEngine) -> MemoryEstimate | str:
        key = engine.spec.spec_hash
        cached = self._by_hash.get(key)
        if isinstance(cached, MemoryEstimate) and cached.source != "name":
            return cached
        self._by_hash[key] = self._estimate(engine)
        return self._by_hash[key]

    def _estimate(self, engine: DesiredEngine) -> MemoryEstimate | str:
        try:
            return kind_for(engine.spec.runtime).estimate_gpu_memory(engine.spec, self._settings)
        except EstimateError as exc:
            return str(exc)
        except (
            OSError,
            ValueError,
            LookupError,
            TypeError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            # A broken model file must cost this one engine its estimate, never stop the
            # reconcile pass for every engine.
            return (
                f"cannot estimate the GPU memory of {engine.spec.model!r}: its files are"
                f" unreadable ({type(exc).__name__}: {exc}); fix them or set gpu_memory_gb"
            )


def gpu_needs(desired: Iterable[DesiredEngine], estimates: EstimateCache) -> dict[str, int | str]:
    """Per-GPU bytes of each engine that wants GPUs, or why there is no estimate."""
    needs: dict[str, int | str] = {}
    for engine in desired:
        if wants_gpu(engine.spec):
            estimate = estimates.get(engine)
            needs[engine.id] = estimate if isinstance(estimate, str) else estimate.per_gpu_bytes
    return needs


def build_view(
    inventory: GpuInventory,
    desired: Iterable[DesiredEngine],
    estimates: EstimateCache,
    our_pids: set[int],
    headroom: float,
) -> GpuView:
    needs = gpu_needs(desired, estimates)
    return GpuView(capacities(inventory, our_pids), headroom, inventory.message, needs)
