"""The GPUs each start of a plan gets (as gpu/placement.py places), or a wait saying why. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sagellmd.gpu.placement import GpuView, Placed, Reservation, describe_need, place
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import Action, Pend, Replace, Start, StartKind
from sagellmd.runtime.kinds import wants_gpu


def _reservations(observed: Mapping[str, Instance], skip: str | None) -> list[Reservation]:
    held = [
        Reservation(instance.engine_id, instance.gpus, instance.gpu_bytes)
        for instance in observed.values()
        if instance.holds_gpus and instance.engine_id != skip
    ]
    # A retiring process holds its memory until it has exited.
    held += [
        Reservation(
            f"{instance.engine_id}#retiring", instance.retiring.gpus, instance.retiring.gpu_bytes
        )
        for instance in observed.values()
        if instance.retiring is not None and instance.retiring.gpus
    ]
    return held


def _starting_gpus(observed: Mapping[str, Instance], skip: str) -> set[int]:
    return {
        gpu
        for instance in observed.values()
        if instance.state is InstanceState.STARTING and instance.engine_id != skip
        for gpu in instance.gpus
    }


def _cannot_place(action: Action, reason: str, surge: bool) -> Action:
    # A surge that does not fit beside the running process becomes stop-then-start;
    # the engine keeps serving its old spec until then.
    if surge:
        return Replace(action.engine_id, f"stop first: {reason}")
    return Pend(action.engine_id, reason)


def place_starts(
    actions: Sequence[Action],
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
        if not isinstance(action, Start):
            placed.append(action)
            continue
        surge = action.kind is StartKind.SURGE
        spec = action.engine.spec
        if not wants_gpu(spec):
            placed.append(action)
            continue
        need = view.needs.get(action.engine_id)
        if isinstance(need, str) or need is None:
            placed.append(_cannot_place(action, need or "no memory estimate", surge))
            continue
        count = spec.tensor_parallel * spec.pipeline_parallel
        if not view.gpus:
            reason = f"{describe_need(count, need)}; {view.message or 'no GPUs'}"
            placed.append(_cannot_place(action, reason, surge))
            continue
        # A surge runs beside the engine's current process, whose memory stays held.
        reservations = _reservations(observed, None if surge else action.engine_id) + planned
        busy = _starting_gpus(observed, action.engine_id) | planned_busy
        outcome = place(count, need, view.gpus, reservations, view.headroom, busy)
        if isinstance(outcome, Placed):
            planned.append(Reservation(action.engine_id, outcome.gpus, outcome.per_gpu_bytes))
            planned_busy.update(outcome.gpus)
            placed.append(replace(action, gpus=outcome.gpus, gpu_bytes=outcome.per_gpu_bytes))
        else:
            placed.append(_cannot_place(action, outcome.message, surge))
    return placed
