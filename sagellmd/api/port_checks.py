"""Refusing a fixed port that the daemon's API or a declared engine's process already holds."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sagellmd.errors import ConflictError
from sagellmd.instance import RESERVING_STATES, Instance
from sagellmd.spec import EngineSpec


def _observed_holders(
    instances: Mapping[str, Instance], automatic: Collection[str], released: Collection[str]
) -> dict[int, str]:
    """Port -> engine for the ports the processes of automatic-port engines hold (or will
    restart on)."""
    holders: dict[int, str] = {}
    for instance in instances.values():
        # An engine on its way out frees its port in seconds; refusing would only race it.
        if instance.engine_id not in automatic or instance.engine_id in released:
            continue
        # A sleeping engine's process still listens on its port.
        holding = instance.state in RESERVING_STATES or instance.asleep
        if instance.port is not None and holding:
            holders[instance.port] = instance.engine_id
        if instance.retiring is not None and instance.retiring.port is not None:
            holders[instance.retiring.port] = instance.engine_id
    return holders


def check_fixed_ports(
    specs: Mapping[str, EngineSpec],
    api_port: int,
    instances: Mapping[str, Instance],
    automatic: Collection[str],
    leaving: Collection[str] = (),
    gateway_port: int | None = None,
) -> None:
    """Raise ConflictError (409) for a fixed port someone else holds, naming the holder.

    `specs` are the engines the change declares (id -> spec), `automatic` the declared
    engines whose port is picked automatically, `leaving` the engines the change removes.
    Ports declared by other engines are the store's check; this one covers what only the
    running daemon knows: its own port and automatically picked ports in use.
    """
    # An engine of this change that gets a fixed port gives its old one up; one that
    # stays automatic keeps the port it has.
    released = set(leaving) | {engine for engine, spec in specs.items() if spec.port is not None}
    holders = _observed_holders(instances, automatic, released)
    for engine_id, spec in specs.items():
        if spec.port is None:
            continue
        if spec.port == api_port:
            raise ConflictError(
                f"{engine_id}.port: port {spec.port} is the daemon's own API port;"
                " choose another port or leave it out for automatic",
                {"field": "port", "port": spec.port, "holder": "api"},
            )
        if spec.port == gateway_port:
            raise ConflictError(
                f"{engine_id}.port: port {spec.port} is the gateway's port (gateway.port in"
                " config.yaml); choose another port or leave it out for automatic",
                {"field": "port", "port": spec.port, "holder": "gateway"},
            )
        holder = holders.get(spec.port)
        if holder is not None and holder != engine_id:
            raise ConflictError(
                f"{engine_id}.port: port {spec.port} is in use by engine {holder!r}"
                " (picked automatically); choose another port or leave it out for automatic",
                {"field": "port", "port": spec.port, "engine": holder},
            )
