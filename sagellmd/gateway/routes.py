"""The route table as the gateway holds it: engines by id and the engines each name routes to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sagellmd.gateway.queueing import POLICIES

DEFAULT_CAP = 256
PD_ROLES = ("prefill", "decode")
UUID_SHAPE = re.compile(rb"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")


@dataclass(slots=True, frozen=True)
class PdMember:
    """What a prefill or decode instance of a disaggregated engine is (`pd` of its entry)."""

    group: str
    role: str  # "prefill" | "decode"
    index: int
    connector: str
    threshold_input_tokens: int | None

    @classmethod
    def from_json(cls, data: Any) -> PdMember | None:
        if not isinstance(data, Mapping) or data.get("role") not in PD_ROLES:
            return None
        threshold = data.get("threshold_input_tokens")
        return cls(
            group=str(data.get("group") or ""),
            role=str(data["role"]),
            index=int(data.get("index") or 0),
            connector=str(data.get("connector") or "nixl"),
            threshold_input_tokens=threshold if isinstance(threshold, int) else None,
        )


@dataclass(slots=True, frozen=True)
class Route:
    """One engine the daemon publishes, as requests are routed to it."""

    id: str
    state: str
    ready: bool
    origin: str
    address: tuple[str, int]
    served_model: str
    names: tuple[str, ...]
    label: str | None
    aliases: tuple[str, ...]
    kind: str
    runtime: str
    endpoints: frozenset[str]
    cap: int
    cost: float
    policy: str | None
    slo_ttft_ms: float | None
    startup_timeout_s: float
    message: str
    # start: on-demand or idle_s set: the daemon may stop (or evict) it when nobody uses it.
    idle_able: bool = False
    pd: PdMember | None = None

    @property
    def runtime_reports_kv(self) -> bool:
        """vLLM's /metrics has the queue and KV-cache gauges kv-aware balancing reads."""
        return self.runtime == "vllm"

    def takes_request_id(self, request_id: bytes) -> bool:
        """llama-cpp-python's server answers 400 to an X-Request-Id that is no UUID."""
        return self.runtime != "llama-cpp" or UUID_SHAPE.fullmatch(request_id) is not None

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Route:
        metadata = entry.get("metadata") or {}
        cost = metadata.get("cost", 0.0)
        slo = metadata.get("slo_ttft_ms")
        policy = metadata.get("gateway_policy")
        return cls(
            id=str(entry["id"]),
            state=str(entry.get("state", "absent")),
            ready=bool(entry.get("ready")) and bool(entry.get("url")),
            origin=str(entry.get("url") or "").rstrip("/"),
            address=_address(str(entry.get("url") or "")),
            served_model=str(entry.get("served_model") or entry["id"]),
            names=tuple(str(name) for name in entry.get("names") or (entry["id"],)),
            label=entry.get("label"),
            aliases=tuple(str(alias) for alias in entry.get("aliases") or ()),
            kind=str(entry.get("kind", "llm")),
            runtime=str(entry.get("runtime", "")),
            endpoints=frozenset(entry.get("endpoints") or ()),
            cap=max(1, int(entry.get("max_concurrent_requests") or DEFAULT_CAP)),
            cost=float(cost) if isinstance(cost, int | float) else 0.0,
            # An unknown name would fail every request of the model: the global policy serves.
            policy=policy if policy in POLICIES else None,
            slo_ttft_ms=float(slo) if isinstance(slo, int | float) else None,
            startup_timeout_s=float(entry.get("startup_timeout_s") or 0.0),
            message=str(entry.get("message") or ""),
            idle_able=entry.get("start") == "on-demand" or entry.get("idle_s") is not None,
            pd=PdMember.from_json(entry.get("pd")),
        )


def _address(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    return (parsed.hostname or "127.0.0.1", parsed.port or 80)


@dataclass(slots=True, frozen=True)
class ModelGroup:
    """The engines one name routes to: replicas of one model, served by one wait queue."""

    key: tuple[str, ...]  # the sorted engine ids; two names with the same engines share it
    engine_ids: tuple[str, ...]
    # Set when the name routes to prefill and decode instances: the two-step protocol.
    pd: PdRouting | None = None

    def endpoints(self, table: RouteTable) -> frozenset[str]:
        served: set[str] = set()
        for engine_id in self.engine_ids:
            served |= table.engines[engine_id].endpoints
        return frozenset(served)


@dataclass(slots=True, frozen=True)
class PdGroup:
    """One disaggregated engine: its prefill pool and its decode pool, each with a wait queue."""

    id: str
    prefill: ModelGroup
    decode: ModelGroup
    threshold_input_tokens: int | None

    @property
    def prefill_name(self) -> str:
        return f"{self.id} (prefill)"

    @property
    def decode_name(self) -> str:
        return f"{self.id} (decode)"


@dataclass(slots=True, frozen=True)
class PdRouting:
    """How a name served by prefill/decode instances is routed: D first, then P of D's group."""

    name: str
    decode: ModelGroup  # every decode instance the name routes to
    groups: tuple[PdGroup, ...]

    @property
    def decode_name(self) -> str:
        return f"{self.name} (decode)"

    def group_of(self, route: Route) -> PdGroup:
        for group in self.groups:
            if route.pd is not None and group.id == route.pd.group:
                return group
        return self.groups[0]


def _pool(ids: list[str]) -> ModelGroup:
    key = tuple(sorted(ids))
    return ModelGroup(key, key)


def _pd_routing(name: str, ids: list[str], engines: Mapping[str, Route]) -> PdRouting | None:
    """The pools of a name whose engines are prefill and decode instances, else None.

    A name of one role only (an instance's own id) is an ordinary engine: it is served
    alone, which helps to look at one instance; a name with both roles ignores any ordinary
    engine among them, whose answers the two-step protocol could not use.
    """
    members: dict[str, dict[str, list[str]]] = {}
    thresholds: dict[str, int | None] = {}
    for engine_id in ids:
        pd = engines[engine_id].pd
        if pd is not None:
            members.setdefault(pd.group, {}).setdefault(pd.role, []).append(engine_id)
            thresholds[pd.group] = pd.threshold_input_tokens
    groups = tuple(
        PdGroup(group, _pool(roles["prefill"]), _pool(roles["decode"]), thresholds[group])
        for group, roles in sorted(members.items())
        if "prefill" in roles and "decode" in roles
    )
    if not groups:
        return None
    decode = _pool([engine_id for group in groups for engine_id in group.decode.engine_ids])
    return PdRouting(name, decode, groups)


@dataclass(slots=True)
class RouteTable:
    version: int = -1
    engines: dict[str, Route] = field(default_factory=dict)
    groups: dict[str, ModelGroup] = field(default_factory=dict)
    # The wait queues of prefill/decode pools by the names their requests wait under.
    pools: dict[str, ModelGroup] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RouteTable:
        engines = {}
        for entry in document.get("engines") or ():
            route = Route.from_json(entry)
            engines[route.id] = route
        by_name: dict[str, list[str]] = {}
        for route in engines.values():
            for name in route.names:
                ids = by_name.setdefault(name, [])
                if route.id not in ids:
                    ids.append(route.id)
        groups = {}
        pools: dict[str, ModelGroup] = {}
        for name, ids in by_name.items():
            key = tuple(sorted(ids))
            pd = _pd_routing(name, ids, engines) if len(ids) > 1 else None
            groups[name] = ModelGroup(key, key, pd)
            if pd is not None:
                pools[pd.decode_name] = pd.decode
                for group in pd.groups:
                    pools[group.prefill_name] = group.prefill
                    pools[group.decode_name] = group.decode
        return cls(int(document.get("version", 0)), engines, groups, pools)

    @property
    def loaded(self) -> bool:
        return self.version >= 0

    def resolve(self, name: str) -> ModelGroup | None:
        return self.groups.get(name)

    def waits_in(self, name: str) -> ModelGroup | None:
        """The engines a request waiting under `name` waits for: a model's, or a P/D pool's."""
        return self.groups.get(name) or self.pools.get(name)

    def pd_routable(self, routing: PdRouting) -> bool:
        """A P/D name serves when one of its groups has a ready prefill and a ready decode."""
        engines = self.engines
        return any(
            any(engines[i].ready for i in group.prefill.engine_ids)
            and any(engines[i].ready for i in group.decode.engine_ids)
            for group in routing.groups
        )

    def routable_names(self) -> list[str]:
        return sorted(self.groups)

    def model_list(self) -> list[dict[str, Any]]:
        """`/v1/models` entries: one per served model name and per alias, with their engines."""
        listed: dict[str, dict[str, Any]] = {}
        for route in self.engines.values():
            for name in (route.served_model, *route.aliases):
                group = self.groups.get(name)
                if group is None or name in listed:
                    continue
                engines = [self.engines[engine_id] for engine_id in group.engine_ids]
                kinds = {engine.kind for engine in engines}
                listed[name] = {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "sagellm",
                    "ready": (
                        self.pd_routable(group.pd)
                        if group.pd is not None
                        else any(engine.ready for engine in engines)
                    ),
                    # llm or embedding, so a client can pick a model for the call it makes;
                    # null when engines of both kinds answer the name.
                    "kind": kinds.pop() if len(kinds) == 1 else None,
                    "engines": [
                        {"id": engine.id, "state": engine.state, "label": engine.label}
                        for engine in engines
                    ],
                    "names": sorted({alias for engine in engines for alias in engine.names}),
                }
        return [listed[name] for name in sorted(listed)]
