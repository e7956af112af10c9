"""The JSON Schemas of the API's request bodies and parameters, shared by the body checks
and the OpenAPI document."""

from __future__ import annotations

import copy
from typing import Any

from sagellmd.models.download import MAX_ID_LENGTH, MODEL_ID
from sagellmd.schemas.engine import ENGINE_SCHEMA, NAME_SCHEMA, PRESET_SCHEMA

# SQLite integers are signed 64-bit; a larger id cannot name a row.
MAX_INTEGER = 2**63 - 1
ROW_ID: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}
# Query parameters by name: the routes read them with these bounds (api/body.py
# query_parameter), and the OpenAPI document publishes the same schemas.
QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "dry_run": {"type": "boolean"},
    "rollback": {"type": "boolean"},
    "tail": {"type": "integer", "minimum": 0, "maximum": 10000},
    "after": ROW_ID,
    "wait": {"type": "number", "minimum": 0, "maximum": 60},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "engine": {"type": "string"},
    "load": {"type": "boolean"},
    "revision": {"type": "string"},
}
OBJECT: dict[str, Any] = {"type": "object"}
# A field that must be given and say something (the seed API's model_id).
TEXT: dict[str, Any] = {"type": "string", "minLength": 1}

# EngineStartRequest field -> engine spec field (the seeds' management API).
SEED_FIELDS = {
    "model_id": "model",
    "engine_kind": "kind",
    "port": "port",
    "tensor_parallel_size": "tensor_parallel",
    "pipeline_parallel_size": "pipeline_parallel",
    "use_gpu": "use_gpu",
    "label": "label",
    "max_concurrent_requests": "max_concurrent_requests",
    "metadata": "metadata",
}

# What validate_model_id accepts, as JSON Schema.
MODEL_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": MODEL_ID.pattern,
    "not": {"pattern": "\\.\\."},
}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema["properties"] = properties
    return schema


def engine_schema(runtimes: list[str] | None = None) -> dict[str, Any]:
    """The engine spec; with `runtimes`, only those (a daemon accepts its configured ones)."""
    schema = copy.deepcopy(ENGINE_SCHEMA)
    if runtimes is not None:
        schema["properties"]["runtime"] = {"enum": runtimes}
    return schema


def preset_schema(runtimes: list[str] | None = None) -> dict[str, Any]:
    schema = copy.deepcopy(PRESET_SCHEMA)
    schema["properties"]["engines"]["items"] = engine_schema(runtimes)
    return schema


def engine_body(runtimes: list[str] | None = None) -> dict[str, Any]:
    """PUT /v1/engines/{id}: an engine spec whose name comes from the path."""
    body = engine_schema(runtimes)
    body["required"] = ["model"]
    return body


def seed_start_body(runtimes: list[str] | None = None) -> dict[str, Any]:
    """EngineStartRequest: the seeds' field names on the engine spec's own schemas."""
    properties = engine_schema(runtimes)["properties"]
    return _closed({seed: properties[spec] for seed, spec in SEED_FIELDS.items()}, ("model_id",))


def plan_variants(spec: dict[str, Any], document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """POST /v1/plan: one body per kind of change; `spec` and `document` say how deep to look.

    The body check passes plain objects (parse_engine and parse_preset look further, with
    their own messages); the OpenAPI document passes the full engine and preset schemas.
    """

    def variant(change: str, required: dict[str, Any], optional: dict[str, Any]) -> dict:
        properties = {"change": {"const": change}, **required, **optional}
        return _closed(properties, ("change", *required))

    return {
        "preset_set": variant("preset_set", {"name": NAME_SCHEMA}, {"document": document}),
        "preset_unset": variant("preset_unset", {"name": NAME_SCHEMA}, {}),
        "engine_put": variant("engine_put", {"id": NAME_SCHEMA, "spec": spec}, {}),
        "engine_delete": variant("engine_delete", {"id": NAME_SCHEMA}, {}),
    }


ROLLBACK_BODY = _closed({"to": {"type": "integer", "minimum": 0}})
DOWNLOAD_BODY = _closed(
    {
        "id": MODEL_ID_SCHEMA,
        "revision": {"type": ["string", "null"], "pattern": "\\S"},
        # One pattern may be given as a plain string.
        "allow_patterns": {
            "type": ["array", "string", "null"],
            "minLength": 1,
            "items": {"type": "string", "minLength": 1},
        },
    },
    ("id",),
)


COUNT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}
TIMESTAMP: dict[str, Any] = {"type": ["number", "null"], "minimum": 0}
# POST /v1/gateway/activity (GATEWAY-CONTRACT.md); every key optional, others ignored.
GATEWAY_ACTIVITY_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pid": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**31 - 1},
        "started_at": TIMESTAMP,
        "route_version": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INTEGER},
        "engines": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "inflight": COUNT,
                    "queued": COUNT,
                    "requests": COUNT,
                    "last_request_at": TIMESTAMP,
                },
            },
        },
        "models": {
            "type": "object",
            "additionalProperties": {"type": "object", "properties": {"queued": COUNT}},
        },
        "totals": {"type": "object", "additionalProperties": COUNT},
        # Requests waiting per engine id for a model none of whose engines is ready.
        "demand": {"type": "object", "additionalProperties": COUNT},
    },
}


def request_schemas(runtimes: list[str]) -> dict[str, dict[str, Any]]:
    """Every request body by the name routes give it, for this daemon's runtimes."""
    return {
        "EngineSpec": engine_schema(runtimes),
        "Preset": preset_schema(runtimes),
        "EngineBody": engine_body(runtimes),
        "PlanBody": {
            "oneOf": list(
                plan_variants(
                    engine_body(runtimes), {"$ref": "#/components/schemas/Preset"}
                ).values()
            )
        },
        "RollbackBody": ROLLBACK_BODY,
        "EngineStartRequest": seed_start_body(runtimes),
        "DownloadBody": DOWNLOAD_BODY,
        "GatewayActivity": GATEWAY_ACTIVITY_BODY,
    }
