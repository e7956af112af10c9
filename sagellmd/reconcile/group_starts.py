"""The starts of a disaggregated engine's instances in one plan, placed as one unit
(gpu/group_placement.py): each gets its GPUs, or every one pends with the same reason. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sagellmd.disaggregated_block import RESERVED_NAME
from sagellmd.disaggregation import INSTANCE_SEPARATOR
from sagellmd.gpu.group_placement import GroupStart, place_group
from sagellmd.gpu.placement import GpuView, Placed, Reservation, describe_need
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.actions import Action, Pend, Start


def is_member(engine_id: str, group: str) -> bool:
    """Whether `engine_id` is an instance (`group.prefill-0`, ...) of `group`."""
    parent, dot, tail = engine_id.rpartition(INSTANCE_SEPARATOR)
    return bool(dot) and parent == group and RESERVED_NAME.match(tail) is not None


def held_by_siblings(
    observed: Mapping[str, Instance], group: str, starting: set[str]
) -> dict[str, tuple[int, ...]]:
    """The GPUs the group's other instances hold (or their retiring processes do)."""
    held: dict[str, tuple[int, ...]] = {}
    for instance in observed.values():
        if instance.engine_id in starting or not is_member(instance.engine_id, group):
            continue
        gpus = instance.gpus if instance.holds_gpus else ()
        if instance.retiring is not None:
            gpus = (*gpus, *instance.retiring.gpus)
        if gpus:
            held[instance.engine_id] = gpus
    return held


def place_group_starts(
    group: str,
    starts: Sequence[Start],
    observed: Mapping[str, Instance],
    view: GpuView,
    reservations: Sequence[Reservation],
    busy: set[int],
) -> list[Action]:
    """Each start with its GPUs, or each a Pend with the group's one reason.

    `reservations` and `busy` are what the whole plan holds so far, the group's starts not
    yet included; the instances being started do not count against themselves.
    """
    ids = {start.engine_id for start in starts}
    members: list[GroupStart] = []
    for start in starts:
        need = view.needs.get(start.engine_id)
        if isinstance(need, str) or need is None:
            reason = f"{group} waits as one unit: {start.engine_id}: {need or 'no estimate'}"
            return [Pend(s.engine_id, reason) for s in starts]
        spec = start.engine.spec
        members.append(
            GroupStart(start.engine_id, spec.tensor_parallel * spec.pipeline_parallel, need)
        )
    if not view.gpus:
        first = members[0]
        why = f"{describe_need(first.count, first.per_gpu_bytes)}; {view.message or 'no GPUs'}"
        return [Pend(s.engine_id, f"{group} waits as one unit: {why}") for s in starts]
    own_busy = {
        gpu
        for instance in observed.values()
        if instance.engine_id in ids and instance.state is InstanceState.STARTING
        for gpu in instance.gpus
    }
    outcome = place_group(
        group,
        members,
        view.gpus,
        [r for r in reservations if r.engine_id not in ids],
        view.headroom,
        busy - own_busy,
        held_by_siblings(observed, group, ids),
    )
    if not isinstance(outcome, dict):
        return [Pend(start.engine_id, outcome.message) for start in starts]
    placed: list[Action] = []
    for start in starts:
        got: Placed = outcome[start.engine_id]
        placed.append(replace(start, gpus=got.gpus, gpu_bytes=got.per_gpu_bytes))
    return placed
