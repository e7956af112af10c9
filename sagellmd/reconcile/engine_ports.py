"""The HTTP port an engine's process starts on: its fixed one, else a free one of the range
(its last one kept when free), never one another process holds."""

from __future__ import annotations

from sagellmd.desired import DesiredEngine
from sagellmd.instance import RESERVING_STATES
from sagellmd.reconcile.side_ports import side_ports_taken
from sagellmd.reconcile.world import World
from sagellmd.runtime.ports import pick_port, port_is_free


def taken_ports(world: World, engine_id: str, surge: bool = False) -> set[int]:
    """The ports other processes hold: HTTP ports, KV side ports, the daemon's own engines'
    (with a surge, the engine's running process too)."""
    taken = {
        instance.port
        for instance in world.instances.values()
        if (instance.engine_id != engine_id or surge)
        and instance.port is not None
        and (instance.state in RESERVING_STATES or instance.asleep)
    }
    # The daemon's own engines (the gateway) have fixed ports no other engine may pick.
    own = {
        engine.spec.port
        for own_id, engine in world.own_engines.items()
        if own_id != engine_id and engine.spec.port is not None
    }
    return (
        taken
        | own
        | side_ports_taken(world.instances, engine_id, surge)
        | {
            instance.retiring.port
            for instance in world.instances.values()
            if instance.retiring is not None and instance.retiring.port is not None
        }
    )


def choose_port(world: World, engine: DesiredEngine, surge: bool) -> tuple[int | None, str]:
    """The port to start on, or None and why there is none."""
    settings = world.settings
    taken = taken_ports(world, engine.id, surge)
    fixed = engine.spec.port
    if fixed is not None:
        if fixed in taken:
            return None, f"port {fixed} is held by another engine"
        if not port_is_free(fixed):
            return None, f"port {fixed} is in use by another process"
        return fixed, ""
    current = world.instances.get(engine.id)
    port = pick_port(
        settings.port_start,
        settings.port_end,
        taken,
        preferred=current.port if current and not surge else None,
    )
    if port is None:
        return None, f"no free port in {settings.port_start}-{settings.port_end}"
    return port, ""
