"""The gateway's route table (GATEWAY-CONTRACT.md): one entry per desired engine, and its
version, which changes exactly when the table does. Pure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sagellmd.desired import DesiredEngine
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_desired
from sagellmd.runtime.kinds import kind_for
from sagellmd.spec import GATEWAY_ENGINE_ID

ABSENT = "absent"  # desired, and no instance yet


def _names(served: Iterable[str], engine: DesiredEngine) -> list[str]:
    """Served names, engine id, label, aliases: in that order, each once. An instance of a
    disaggregated engine answers to its engine's names, then to its own id."""
    spec = engine.spec
    group = [engine.pd.group] if engine.pd is not None else []
    own = [engine.id]
    candidates = [*served, *(group or own), spec.label, *spec.aliases, *(own if group else [])]
    return list(dict.fromkeys(name for name in candidates if name))


def _url(base_url: str, host: str | None) -> str:
    origin = urlsplit(base_url)
    if host is None:
        return f"{origin.scheme}://{origin.netloc}"
    bracketed = f"[{host}]" if ":" in host else host
    return f"{origin.scheme}://{bracketed}:{origin.port}"


def route_entry(
    engine: DesiredEngine,
    instance: Instance | None,
    host_of: Callable[[str | None], str | None] = lambda node: None,
) -> dict[str, Any]:
    """One engine as the gateway routes to it; `host_of` gives the address of an engine on
    another cluster node (None: the daemon's machine, loopback)."""
    spec = engine.spec
    kind = kind_for(spec.runtime)
    served = kind.served_model_names(spec)
    state = instance.state.value if instance is not None else ABSENT
    port = instance.port if instance is not None else None
    message = instance.message if instance is not None else "waiting for the reconcile loop"
    retiring = instance.retiring if instance is not None else None
    node = instance.node if instance is not None else None
    if (
        instance is not None
        and instance.state is not InstanceState.READY
        and retiring is not None
        and retiring.port is not None
    ):
        # Start-then-stop: the previous process serves until its replacement is ready.
        state, port, node = InstanceState.READY.value, retiring.port, retiring.node
        message = f"previous pid {retiring.pid} serves while its replacement starts"
    ready = state == InstanceState.READY.value and port is not None
    return {
        "id": engine.id,
        "state": state,
        "ready": ready,
        "url": _url(kind.base_url(port), host_of(node)) if port is not None else None,
        "served_model": served[0] if served else spec.model,
        "names": _names(served, engine),
        "label": spec.label,
        "aliases": list(spec.aliases),
        "kind": spec.kind,
        "runtime": spec.runtime,
        "endpoints": list(kind.endpoints(spec)),
        "max_concurrent_requests": spec.max_concurrent_requests,
        "metadata": dict(spec.metadata),
        "startup_timeout_s": spec.startup_timeout_s,
        "start": spec.start,
        "idle_s": spec.idle_s,
        "idle_action": spec.idle_action,
        "message": message,
        # The gateway serves instances of one disaggregated engine by the P/D protocol.
        "pd": engine.pd.to_dict() if engine.pd is not None else None,
    }


def route_entries(
    desired: Iterable[DesiredEngine],
    instances: Mapping[str, Instance],
    host_of: Callable[[str | None], str | None] = lambda node: None,
) -> list[dict[str, Any]]:
    """Every desired engine but the gateway itself (disaggregated ones as their instances),
    by id."""
    return [
        route_entry(engine, instances.get(engine.id), host_of)
        for engine in sorted(expand_desired(desired), key=lambda engine: engine.id)
        if engine.id != GATEWAY_ENGINE_ID
    ]


@dataclass
class RouteVersions:
    """Numbers the route tables: a new number exactly when the content differs from the last.

    It starts from the clock in milliseconds, so a restarted daemon never reuses a number an
    older daemon gave another table (a gateway waiting `after` it would miss the change).
    """

    clock: Callable[[], float] = time.time
    _last: list[dict[str, Any]] | None = None
    _version: int = field(default=0)

    def __post_init__(self) -> None:
        self._version = int(self.clock() * 1000)

    def table(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """`{"version", "engines"}` for these entries."""
        if entries != self._last:
            self._version += 1 if self._last is not None else 0
            self._last = entries
        return {"version": self._version, "engines": entries}
