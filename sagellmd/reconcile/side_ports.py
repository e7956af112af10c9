"""The KV side-channel ports of a prefill or decode instance: a free block of the port
range, its own last one kept when still free (the peer may still name it)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sagellmd.instance import RESERVING_STATES, Instance
from sagellmd.runtime.argv import side_ports_for
from sagellmd.runtime.ports import pick_port_block, port_is_free
from sagellmd.spec import EngineSpec


def side_ports_taken(instances: Mapping[str, Instance], engine_id: str, surge: bool) -> set[int]:
    """Side ports other processes hold (with a surge, the engine's running process too)."""
    return {
        port
        for instance in instances.values()
        if (instance.engine_id != engine_id or surge)
        and (instance.state in RESERVING_STATES or instance.asleep)
        for port in instance.side_ports
    }


def choose_side_ports(
    spec: EngineSpec,
    current: Instance | None,
    taken: Collection[int],
    port_range: tuple[int, int],
    surge: bool = False,
) -> tuple[tuple[int, ...] | None, str]:
    """The side ports to start with ((): none needed; None: none free, and why)."""
    count = side_ports_for(spec)
    if count == 0:
        return (), ""
    previous = current.side_ports if current is not None and not surge else ()
    if (
        len(previous) == count
        and not any(port in taken for port in previous)
        and all(map(port_is_free, previous))
    ):
        return previous, ""
    start, end = port_range
    first = pick_port_block(start, end, taken, count)
    if first is None:
        return None, f"no {count} free consecutive side-channel ports in {start}-{end}"
    return tuple(range(first, first + count)), ""
