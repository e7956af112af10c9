"""A disaggregated engine as `/v1/status` and `/v1/engines` show it: one entry with the
block, a state derived from its instances, and each instance as an entry of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sagellmd.desired import DesiredEngine
from sagellmd.disaggregated_block import ROLES
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_engine

# From least to most advanced: the engine shows the least advanced of its instances.
ADVANCE = (
    InstanceState.FAILED,
    InstanceState.STOPPED,
    InstanceState.STOPPING,
    InstanceState.BACKOFF,
    InstanceState.UNHEALTHY,
    InstanceState.PENDING,
    InstanceState.IDLE,
    InstanceState.STARTING,
    InstanceState.READY,
)

EntryOf = Callable[[str, DesiredEngine, Instance | None], dict[str, Any]]


def derived_state(instances: list[dict[str, Any]]) -> tuple[str, str]:
    """`ready` once at least one prefill and one decode instance are, else the least
    advanced instance's state; and the message that goes with it."""
    ready = {
        role: [e for e in instances if e["role"] == role and e["state"] == "ready"]
        for role in ROLES
    }
    if all(ready.values()):
        counts = " and ".join(f"{len(ready[role])} {role}" for role in ROLES)
        return InstanceState.READY.value, f"{counts} ready"
    rank = {state.value: index for index, state in enumerate(ADVANCE)}
    least = min(instances, key=lambda e: (rank.get(e["state"], 0), e["id"]))
    if least["state"] == InstanceState.READY.value:
        # Every instance ready, yet a role has none: cannot happen (a role has >= 1 replica).
        return least["state"], least["message"]
    return least["state"], f"{least['id']}: {least['message']}"


def group_entry(
    parent: dict[str, Any],
    engine: DesiredEngine,
    instances: Mapping[str, Instance],
    entry_of: EntryOf,
) -> dict[str, Any]:
    """The parent engine's entry (built without an instance) completed from its instances."""
    block = engine.spec.disaggregated
    assert block is not None
    members = []
    for member in expand_engine(engine):
        assert member.pd is not None
        entry = entry_of(member.id, member, instances.get(member.id))
        members.append({**entry, "role": member.pd.role})
    state, message = derived_state(members)
    if engine.invalid:
        message = parent["message"].rsplit("; ", 1)[0] + f"; {message}"
    gpus = sorted({gpu for entry in members for gpu in entry["gpus"]})
    return {
        **parent,
        "state": state,
        "message": message,
        "pid": None,
        "port": None,
        "address": None,
        "gpus": gpus,
        "restarts": sum(entry["restarts"] for entry in members),
        "disaggregated": block.to_dict(),
        "instances": members,
    }
