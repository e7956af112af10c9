"""GPU placement inside a plan: starts get GPUs, or wait with the numbers. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sagellmd.gpu.placement import GpuCapacity, Placed, Reservation, describe_need, place
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import Action, DesiredEngine, Pend, Restart, Start


@dataclass(frozen=True)
class GpuView:
    """What placement needs to know: capacities, headroom, and each engine's per-GPU need.

    `needs` maps an engine id to its per-GPU bytes, or to a message saying why there
    is no estimate. `message` describes the inventory ("no GPUs (NVML unavailable: ...)").
    """

    gpus: tuple[GpuCapacity, ...]
    headroom: float = 0.95
    message: str = ""
    needs: Mapping[str, int | str] = field(default_factory=dict)


def _reservations(observed: Mapping[str, Instance], skip: str) -> list[Reservation]:
    return [
        Reservation(instance.engine_id, instance.gpus, instance.gpu_bytes)
        for instance in observed.values()
        if instance.holds_gpus and instance.engine_id != skip
    ]


def _starting_gpus(observed: Mapping[str, Instance], skip: str) -> set[int]:
    return {
        gpu
        for instance in observed.values()
        if instance.state is InstanceState.STARTING and instance.engine_id != skip
        for gpu in instance.gpus
    }


def place_starts(
    actions: Sequence[Action],
    desired: Mapping[str, DesiredEngine],
    observed: Mapping[str, Instance],
    view: GpuView,
) -> list[Action]:
    """Give each start of a GPU engine its GPUs, one start at a time per GPU.

    vLLM measures free memory while it starts, so two engines starting on one GPU
    would both count the same free memory: a start waits while another engine is
    starting on any GPU it would get. Starts planned earlier in this pass count too.
    """
    placed: list[Action] = []
    planned: list[Reservation] = []
    planned_busy: set[int] = set()
    for action in actions:
        if not isinstance(action, Start | Restart):
            placed.append(action)
            continue
        spec = desired[action.engine_id].spec
        if not spec.wants_gpu:
            placed.append(action)
            continue
        need = view.needs.get(action.engine_id)
        if isinstance(need, str) or need is None:
            placed.append(Pend(action.engine_id, need or "no memory estimate"))
            continue
        count = spec.tensor_parallel * spec.pipeline_parallel
        if not view.gpus:
            reason = f"{describe_need(count, need)}; {view.message or 'no GPUs'}"
            placed.append(Pend(action.engine_id, reason))
            continue
        reservations = _reservations(observed, action.engine_id) + planned
        busy = _starting_gpus(observed, action.engine_id) | planned_busy
        outcome = place(count, need, view.gpus, reservations, view.headroom, busy)
        if isinstance(outcome, Placed):
            planned.append(Reservation(action.engine_id, outcome.gpus, need))
            planned_busy.update(outcome.gpus)
            placed.append(replace(action, gpus=outcome.gpus, gpu_bytes=need))
        else:
            placed.append(Pend(action.engine_id, outcome.message))
    return placed
