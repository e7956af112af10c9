"""The GPUs each start of a plan gets (as gpu/placement.py places), or a wait saying why. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sagellmd.gpu.cluster_placement import place_on_a_node
from sagellmd.gpu.placement import (
    GpuCapacity,
    GpuView,
    NotPlaced,
    Placed,
    Reservation,
    describe_need,
    place,
)
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import Action, Pend, Replace, Start, StartKind, Wake
from sagellmd.reconcile.group_starts import held_by_siblings, place_group_starts
from sagellmd.reconcile.make_room import Room
from sagellmd.reconcile.spread_starts import place_spread, spans_nodes
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


def _place_wake(
    action: Wake,
    instance: Instance,
    view: GpuView,
    reservations: list[Reservation],
    busy: set[int],
    room: Room | None,
) -> Placed | list[Action]:
    """A sleeping process wakes on the GPUs it was started on (CUDA_VISIBLE_DEVICES), and
    needs its reservation back there."""
    own = replace(view, gpus=tuple(gpu for gpu in view.gpus if gpu.index in instance.gpus))
    count, need = len(instance.gpus), instance.gpu_bytes
    outcome = place(count, need, own.gpus, reservations, view.headroom, busy)
    if isinstance(outcome, Placed):
        return outcome
    if room is not None and action.waiting and not outcome.busy:
        return room.evict_for(action.engine_id, count, need, own, reservations, busy)
    return [Pend(action.engine_id, outcome.message)]


def _group_start(action: Action) -> bool:
    return (
        isinstance(action, Start)
        and action.engine.pd is not None
        and action.kind is not StartKind.SURGE
        and wants_gpu(action.engine.spec)
    )


def _allowed(action: Start, observed: Mapping[str, Instance], view: GpuView) -> list[GpuCapacity]:
    """The GPUs a start may get: an instance of a disaggregated engine (its surge) none of
    the GPUs its siblings hold."""
    if action.engine.pd is None:
        return list(view.gpus)
    held = held_by_siblings(observed, action.engine.pd.group, {action.engine_id})
    taken = {gpu for gpus in held.values() for gpu in gpus}
    return [gpu for gpu in view.gpus if gpu.index not in taken]


def _own_machine(view: GpuView) -> GpuView:
    """A prefill/decode set on a cluster runs on the daemon's machine (its KV transfer
    addresses 127.0.0.1): the view without the other nodes' GPUs."""
    if not view.nodes:
        return view
    local = view.nodes[0]
    return replace(view, gpus=tuple(g for g in view.gpus if local.holds(g.index)), nodes=())


def _place(
    count: int,
    need: int,
    gpus: list[GpuCapacity],
    reservations: list[Reservation],
    view: GpuView,
    busy: set[int],
) -> Placed | NotPlaced:
    """Best fit; on a cluster, all of an engine's GPUs on one node."""
    if view.nodes:
        return place_on_a_node(count, need, gpus, reservations, view, busy)
    return place(count, need, gpus, reservations, view.headroom, busy)


def place_starts(
    actions: Sequence[Action],
    observed: Mapping[str, Instance],
    view: GpuView,
    room: Room | None = None,
) -> list[Action]:
    """Give each start of a GPU engine its GPUs, one start at a time per GPU.

    vLLM measures free memory while it starts, so two engines starting on one GPU
    would both count the same free memory: a start waits while another engine is
    starting on any GPU it would get. Starts planned earlier in this pass count too.
    A start on demand (or a wake) that does not fit may evict idle-able engines (`room`).
    """
    placed: list[Action] = []
    planned: list[Reservation] = []
    planned_busy: set[int] = set()
    # The starts of a disaggregated engine's instances are placed together, where the first
    # of them is in the plan.
    groups: dict[str, list[Start]] = {}
    for action in actions:
        if _group_start(action):
            assert isinstance(action, Start) and action.engine.pd is not None
            groups.setdefault(action.engine.pd.group, []).append(action)
    for action in actions:
        if _group_start(action):
            assert isinstance(action, Start) and action.engine.pd is not None
            starts = groups.pop(action.engine.pd.group, [])
            if not starts:
                continue  # placed with the first of its group
            reservations = _reservations(observed, None) + planned
            busy = set().union(*(_starting_gpus(observed, s.engine_id) for s in starts))
            for result in place_group_starts(
                action.engine.pd.group,
                starts,
                observed,
                _own_machine(view),
                reservations,
                busy | planned_busy,
            ):
                if isinstance(result, Start) and result.gpus:
                    planned.append(Reservation(result.engine_id, result.gpus, result.gpu_bytes))
                    planned_busy.update(result.gpus)
                placed.append(result)
            continue
        if isinstance(action, Wake) and observed[action.engine_id].gpus:
            instance = observed[action.engine_id]
            reservations = _reservations(observed, action.engine_id) + planned
            busy = _starting_gpus(observed, action.engine_id) | planned_busy
            woken = _place_wake(action, instance, view, reservations, busy, room)
            if isinstance(woken, Placed):
                planned.append(Reservation(action.engine_id, woken.gpus, woken.per_gpu_bytes))
                planned_busy.update(woken.gpus)
                placed.append(replace(action, gpus=woken.gpus, gpu_bytes=woken.per_gpu_bytes))
            else:
                placed.extend(woken)
            continue
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
        if not view.gpus and not view.nodes and spec.nodes in (None, 1):
            reason = f"{describe_need(count, need)}; {view.message or 'no GPUs'}"
            placed.append(_cannot_place(action, reason, surge))
            continue
        # A surge runs beside the engine's current process, whose memory stays held.
        reservations = _reservations(observed, None if surge else action.engine_id) + planned
        busy = _starting_gpus(observed, action.engine_id) | planned_busy
        if spans_nodes(spec, view):
            if surge:
                # Its bundles are whole GPUs named after the engine: one set at a time.
                placed.append(Replace(action.engine_id, "an engine spanning nodes is replaced"))
                continue
            spread = place_spread(action, need, view, reservations, busy)
            if isinstance(spread, Start):
                planned.append(Reservation(action.engine_id, spread.gpus, spread.gpu_bytes))
                planned_busy.update(spread.gpus)
                placed.append(spread)
            else:
                placed.append(_cannot_place(action, spread.message, surge))
            continue
        where = view if action.engine.pd is None else _own_machine(view)
        outcome = _place(count, need, _allowed(action, observed, where), reservations, where, busy)
        if not isinstance(outcome, Placed) and room and action.waiting and not surge:
            if not outcome.busy:
                made = room.evict_for(action.engine_id, count, need, view, reservations, busy)
                if not isinstance(made, Placed):
                    placed.extend(made)
                    continue
                outcome = made
        if isinstance(outcome, Placed):
            planned.append(Reservation(action.engine_id, outcome.gpus, outcome.per_gpu_bytes))
            planned_busy.update(outcome.gpus)
            placed.append(replace(action, gpus=outcome.gpus, gpu_bytes=outcome.per_gpu_bytes))
        else:
            placed.append(_cannot_place(action, outcome.message, surge))
    return placed
