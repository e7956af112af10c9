"""Every route of the API: method, path, endpoint, and what the OpenAPI document says of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from sagellmd.api import (
    desired_routes,
    events_routes,
    gateway_relay,
    gateway_routes,
    management_routes,
    models_routes,
    read_routes,
    ui_auth,
)

Handler = Callable[[Request], Awaitable[Response]]
CHANGE = {"200": "ChangeAnswer"}


@dataclass(frozen=True)
class RouteDoc:
    """One operation: answers by status -> schema name (sagellmd/schemas/), parameters by
    name (sagellmd/api/openapi.py PARAMETERS) and the request body's schema name."""

    summary: str
    answers: Mapping[str, str] = field(default_factory=lambda: {"200": "Object"})
    errors: tuple[int, ...] = ()
    params: tuple[str, ...] = ()
    body: str | None = None
    body_required: bool = True
    media_type: str = "application/json"
    body_media_types: tuple[str, ...] = ("application/json",)
    # A read that needs the token even on a loopback bind (what only the gateway reads).
    token: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    doc: RouteDoc

    @property
    def mutating(self) -> bool:
        """Every method but GET changes something and needs the token."""
        return self.method != "GET"

    @property
    def needs_token(self) -> bool:
        return self.mutating or self.doc.token


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/metrics",
        read_routes.metrics,
        RouteDoc("Prometheus metrics", {"200": "PrometheusText"}, media_type="text/plain"),
    ),
    Endpoint("GET", "/openapi.json", read_routes.openapi, RouteDoc("This document")),
    Endpoint("GET", "/healthz", read_routes.healthz, RouteDoc("Daemon liveness")),
    Endpoint(
        "GET",
        "/v1/status",
        read_routes.status,
        RouteDoc("Generation, daemon, GPUs and engines", {"200": "Status"}),
    ),
    Endpoint(
        "GET", "/v1/engines", read_routes.list_engines, RouteDoc("Engines", {"200": "EngineList"})
    ),
    Endpoint(
        "GET",
        "/v1/engines/{engine_id}",
        read_routes.get_engine,
        RouteDoc("One engine", {"200": "EngineEntry"}, (404,)),
    ),
    Endpoint(
        "PUT",
        "/v1/engines/{engine_id}",
        desired_routes.put_engine,
        RouteDoc(
            "Create or replace an ad-hoc engine",
            {"200": "ChangeAnswer", "201": "ChangeAnswer"},
            (400, 409, 413),
            ("new_engine_id", "dry_run", "rollback"),
            "EngineBody",
        ),
    ),
    Endpoint(
        "DELETE",
        "/v1/engines/{engine_id}",
        desired_routes.delete_engine,
        RouteDoc("Remove an ad-hoc engine", CHANGE, (400, 404, 409), ("dry_run", "rollback")),
    ),
    Endpoint(
        "POST",
        "/v1/engines/{engine_id}/restart",
        desired_routes.restart_engine,
        RouteDoc("Restart one engine", errors=(404,)),
    ),
    Endpoint(
        "GET",
        "/v1/engines/{engine_id}/logs",
        read_routes.engine_logs,
        RouteDoc(
            "The engine's log tail, or the lines after a byte offset (long-polled)",
            errors=(400, 404),
            params=("tail", "after", "wait"),
        ),
    ),
    Endpoint(
        "GET",
        "/v1/presets",
        desired_routes.list_presets,
        RouteDoc("Built-in, file and active presets"),
    ),
    Endpoint(
        "GET",
        "/v1/presets/{name}",
        desired_routes.get_preset,
        RouteDoc("One preset", errors=(400, 404)),
    ),
    Endpoint(
        "PUT",
        "/v1/presets/{name}",
        desired_routes.put_preset,
        RouteDoc(
            "Set a preset (body: a preset document, or none for a built-in)",
            CHANGE,
            (400, 404, 409, 413),
            ("new_preset_name", "dry_run", "rollback"),
            "Preset",
            body_required=False,
            body_media_types=("application/json", "application/yaml"),
        ),
    ),
    Endpoint(
        "DELETE",
        "/v1/presets/{name}",
        desired_routes.delete_preset,
        RouteDoc("Unset a preset", CHANGE, (400, 404), ("dry_run", "rollback")),
    ),
    Endpoint(
        "GET",
        "/v1/events",
        events_routes.events,
        RouteDoc(
            "Events, optionally long-polled",
            {"200": "EventPage"},
            (400,),
            ("after", "wait", "limit", "engine", "load"),
        ),
    ),
    Endpoint(
        "GET",
        "/v1/generations",
        events_routes.generations,
        RouteDoc("History of the desired state", {"200": "GenerationList"}, (400,), ("limit",)),
    ),
    Endpoint(
        "GET",
        "/v1/generations/{generation}",
        events_routes.generation,
        RouteDoc("One generation", {"200": "Generation"}, (400, 404)),
    ),
    Endpoint(
        "GET",
        "/v1/gpus",
        read_routes.gpus,
        RouteDoc("GPU inventory and reservations", {"200": "Gpus"}),
    ),
    Endpoint(
        "GET",
        "/v1/nodes",
        read_routes.nodes,
        RouteDoc("The cluster's nodes (empty without cluster:)", {"200": "NodeList"}),
    ),
    Endpoint(
        "POST",
        "/v1/plan",
        desired_routes.plan_change,
        RouteDoc(
            "The plan of a proposed change (changes nothing)",
            CHANGE,
            (400, 404, 409, 413),
            body="PlanBody",
        ),
    ),
    Endpoint(
        "POST",
        "/v1/management/engines",
        management_routes.start_engine,
        RouteDoc(
            "Seed API: start an engine (EngineStartRequest)",
            {"201": "SeedStarted"},
            (400, 409, 413),
            body="EngineStartRequest",
        ),
    ),
    Endpoint(
        "DELETE",
        "/v1/management/engines/{engine_id}",
        management_routes.stop_engine,
        RouteDoc("Seed API: stop an engine", CHANGE, (404, 409)),
    ),
    Endpoint(
        "GET",
        "/v1/management/status",
        management_routes.status,
        RouteDoc("Seed API: GPUs, engines and instances", {"200": "SeedStatus"}),
    ),
    Endpoint(
        "POST",
        "/v1/rollback",
        desired_routes.rollback,
        RouteDoc(
            "A new generation equal to an older one",
            CHANGE,
            (400, 404, 413),
            ("dry_run", "rollback"),
            "RollbackBody",
            body_required=False,
        ),
    ),
    Endpoint(
        "GET",
        "/v1/routes",
        gateway_routes.routes,
        RouteDoc(
            "The gateway's route table, long-polled (needs the token even though a GET: it"
            " names every engine's port)",
            {"200": "RouteTable"},
            (400,),
            ("after", "wait"),
            token=True,
        ),
    ),
    Endpoint(
        "POST",
        "/v1/gateway/activity",
        gateway_routes.activity,
        RouteDoc(
            "The gateway's activity report (in-flight, queued, totals)",
            {"204": ""},
            (400, 413),
            body="GatewayActivity",
        ),
    ),
    Endpoint(
        "GET",
        "/v1/gateway",
        gateway_routes.gateway,
        RouteDoc("The gateway's state, URL, pid and totals", {"200": "GatewayStatus"}),
    ),
    Endpoint(
        "GET",
        "/v1/models/local",
        models_routes.list_local,
        RouteDoc(
            "Models on the daemon's disk, with the desired engines using each", {"200": "Any"}
        ),
    ),
    Endpoint(
        "POST",
        "/v1/models/local",
        models_routes.download,
        RouteDoc(
            "Download a model into the hub cache in the background (events: model_download)",
            {"202": "Any"},
            (400, 409),
            body="DownloadBody",
        ),
    ),
    Endpoint(
        "DELETE",
        "/v1/models/local/{model_id:path}",
        models_routes.delete_local,
        RouteDoc(
            "Delete a model's revisions from the hub cache (refused while in use)",
            {"200": "Any"},
            (400, 404, 409),
            ("revision", "dry_run"),
        ),
    ),
    Endpoint(
        "POST",
        "/v1/ui/codes",
        ui_auth.create_code,
        RouteDoc(
            "A one-time dashboard sign-in code (120 s) and the /ui/ URL carrying it",
            {"200": "UiCode"},
        ),
    ),
    Endpoint(
        "POST",
        "/v1/gateway/openai/v1/chat/completions",
        gateway_relay.relay,
        RouteDoc(
            "Relayed to the gateway's /v1/chat/completions, its answer streamed back as sent"
            " (SSE stays SSE); 409 while the gateway is disabled",
            {"200": "Any"},
            (400, 409, 413, 502),
            body="Object",
        ),
    ),
    Endpoint(
        "POST",
        "/v1/gateway/openai/v1/embeddings",
        gateway_relay.relay,
        RouteDoc(
            "Relayed to the gateway's /v1/embeddings; 409 while the gateway is disabled",
            {"200": "Any"},
            (400, 409, 413, 502),
            body="Object",
        ),
    ),
    Endpoint(
        "GET",
        "/v1/gateway/openai/v1/models",
        gateway_relay.relay,
        RouteDoc(
            "Relayed to the gateway's /v1/models (needs the token even though a GET: the"
            " relay carries the gateway's API key); 409 while the gateway is disabled",
            {"200": "Any"},
            (409, 502),
            token=True,
        ),
    ),
]
