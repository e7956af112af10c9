"""The OpenAPI 3.1 document of the API, built from the same JSON Schemas that validate input."""

from __future__ import annotations

import copy
from typing import Any

from sagellmd import __version__
from sagellmd.api import management_routes, models_routes
from sagellmd.api.body import MAX_INTEGER
from sagellmd.spec import ENGINE_SCHEMA, NAME_PATTERN, PRESET_SCHEMA


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "Error")


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


CHANGE_PARAMS = [
    _query("dry_run", {"type": "boolean"}, "Compute the plan; change nothing."),
    _query("rollback", {"type": "boolean"}, "Roll a failed rollout back (default true)."),
]
NAME = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}
ENGINE_ID = _path("engine_id")
PRESET_NAME = _path("name")
# Reads of an unknown id answer 404; a PUT checks the name itself (400).
NEW_ENGINE_ID = _path("engine_id", NAME)
NEW_PRESET_NAME = _path("name", NAME)
ROW_ID = {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}

NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
OPEN_OBJECT = {"type": "object"}

ENGINE_ENTRY = {
    "type": "object",
    "required": [
        "id",
        "preset",
        "name",
        "kind",
        "model",
        "runtime",
        "state",
        "pid",
        "port",
        "restarts",
        "label",
        "message",
    ],
    "properties": {
        "id": {"type": "string"},
        "preset": NULLABLE_STRING,
        "name": {"type": "string"},
        "kind": NULLABLE_STRING,
        "model": NULLABLE_STRING,
        "runtime": NULLABLE_STRING,
        "label": NULLABLE_STRING,
        "desired": {"type": "boolean"},
        "invalid": NULLABLE_STRING,
        "state": {
            "enum": [
                "pending",
                "starting",
                "ready",
                "unhealthy",
                "backoff",
                "stopping",
                "stopped",
                "failed",
            ]
        },
        "pid": NULLABLE_INT,
        "port": NULLABLE_INT,
        "gpus": {"type": "array", "items": {"type": "integer"}},
        "gpu_memory_gb": {"type": ["number", "null"]},
        "restarts": {"type": "integer"},
        "message": {"type": "string"},
        "spec": {"type": ["object", "null"]},
        "metadata": OPEN_OBJECT,
    },
}
PLAN_ITEM = {
    "type": "object",
    "required": ["action", "engine", "reason"],
    "properties": {
        "action": {
            "enum": [
                "start",
                "restart",
                "surge",
                "retire",
                "stop",
                "replace",
                "forget",
                "wait",
                "pending",
            ]
        },
        "engine": {"type": "string"},
        "reason": {"type": "string"},
        "gpus": {"type": "array", "items": {"type": "integer"}},
        "gpu_bytes": {"type": "integer"},
    },
}
CHANGE_ANSWER = {
    "type": "object",
    "required": ["generation", "plan"],
    "properties": {
        "generation": {"type": "integer"},
        "dry_run": {"type": "boolean"},
        "plan": {"type": "array", "items": _ref("PlanItem")},
    },
}
EVENT = {
    "type": "object",
    "required": ["id", "ts", "engine", "type", "message", "generation"],
    "properties": {
        "id": {"type": "integer"},
        "ts": {"type": "string"},
        "engine": NULLABLE_STRING,
        "type": {"type": "string"},
        "message": {"type": "string"},
        "generation": NULLABLE_INT,
    },
}
ENGINE_CHANGE = {
    "type": "object",
    "required": ["engine", "removed", "verdict", "reason", "superseded_by"],
    "properties": {
        "engine": {"type": "string"},
        "removed": {"type": "boolean"},
        "verdict": {"enum": ["pending", "healthy", "failed", "none"]},
        "reason": {"type": "string"},
        "superseded_by": NULLABLE_INT,
    },
}
GENERATION = {
    "type": "object",
    "required": ["id", "ts", "cause", "healthy", "engines"],
    "properties": {
        "id": {"type": "integer"},
        "ts": {"type": "string"},
        "cause": {"type": "string"},
        "healthy": {"type": ["boolean", "null"]},
        "state": {"enum": ["rolling out", "healthy", "failed", "superseded"]},
        "verdict": NULLABLE_STRING,
        "auto_rollback": {"type": "boolean"},
        "reverts": NULLABLE_INT,
        "presets": {"type": "array", "items": {"type": "string"}},
        "engines": {"type": "array", "items": OPEN_OBJECT},
        "changes": {"type": "array", "items": ENGINE_CHANGE},
    },
}
GPUS = {
    "type": "object",
    "required": ["mode", "simulated", "message", "devices"],
    "properties": {
        "mode": {"enum": ["nvml", "simulated", "none"]},
        "simulated": {"type": "boolean"},
        "message": {"type": "string"},
        "headroom": {"type": "number"},
        "devices": {"type": "array", "items": OPEN_OBJECT},
    },
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": OPEN_OBJECT,
            },
        }
    },
}


def _seed_start(runtimes: list[str]) -> dict[str, Any]:
    """EngineStartRequest: the seeds' field names on the engine spec's own schemas."""
    properties = _engine_schema(runtimes)["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["model_id"],
        "properties": {
            seed: properties[spec] for seed, spec in management_routes.SEED_FIELDS.items()
        },
    }


def _engine_schema(runtimes: list[str]) -> dict[str, Any]:
    schema = copy.deepcopy(ENGINE_SCHEMA)
    # Only configured runtimes are accepted; the document says which ones this daemon has.
    schema["properties"]["runtime"] = {"enum": runtimes}
    return schema


def _preset_schema(runtimes: list[str]) -> dict[str, Any]:
    schema = copy.deepcopy(PRESET_SCHEMA)
    schema["properties"]["engines"]["items"] = _engine_schema(runtimes)
    return schema


def _engine_body(runtimes: list[str]) -> dict[str, Any]:
    body = _engine_schema(runtimes)
    body["required"] = ["model"]  # the name comes from the path
    return body


def _plan_body(runtimes: list[str]) -> dict[str, Any]:
    name = NAME

    def variant(change: str, required: dict[str, Any], optional: dict[str, Any]) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["change", *required],
            "properties": {"change": {"const": change}, **required, **optional},
        }

    return {
        "oneOf": [
            variant("preset_set", {"name": name}, {"document": _ref("Preset")}),
            variant("preset_unset", {"name": name}, {}),
            variant("engine_put", {"id": name, "spec": _engine_body(runtimes)}, {}),
            variant("engine_delete", {"id": name}, {}),
        ]
    }


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    mutating: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    if mutating:
        operation["security"] = [{"bearer": []}]
        operation["responses"] = {**responses, **_errors(401)}
    return operation


def openapi_document(runtimes: list[str]) -> dict[str, Any]:
    change = _json(_ref("ChangeAnswer"))
    engine_list = _json(
        {
            "type": "object",
            "required": ["engines"],
            "properties": {"engines": {"type": "array", "items": _ref("EngineEntry")}},
        }
    )
    paths: dict[str, Any] = {
        "/healthz": {"get": _operation("Daemon liveness", {"200": _json(OPEN_OBJECT)})},
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/v1/status": {
            "get": _operation(
                "Generation, daemon, GPUs and engines",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["generation", "daemon", "gpus", "engines"],
                            "properties": {
                                "generation": {"type": "integer"},
                                "daemon": OPEN_OBJECT,
                                "gpus": _ref("Gpus"),
                                "presets": {"type": "array", "items": {"type": "string"}},
                                "engines": {"type": "array", "items": _ref("EngineEntry")},
                            },
                        }
                    )
                },
            )
        },
        "/v1/engines": {"get": _operation("Engines", {"200": engine_list})},
        "/v1/engines/{engine_id}": {
            "parameters": [ENGINE_ID],
            "get": _operation("One engine", {"200": _json(_ref("EngineEntry")), **_errors(404)}),
            "put": _operation(
                "Create or replace an ad-hoc engine",
                {"200": change, "201": change, **_errors(400, 409, 413)},
                params=[NEW_ENGINE_ID, *CHANGE_PARAMS],
                body=_engine_body(runtimes),
                mutating=True,
            ),
            "delete": _operation(
                "Remove an ad-hoc engine",
                {"200": change, **_errors(400, 404, 409)},
                params=CHANGE_PARAMS,
                mutating=True,
            ),
        },
        "/v1/engines/{engine_id}/restart": {
            "parameters": [ENGINE_ID],
            "post": _operation(
                "Restart one engine", {"200": _json(OPEN_OBJECT), **_errors(404)}, mutating=True
            ),
        },
        "/v1/engines/{engine_id}/logs": {
            "parameters": [ENGINE_ID],
            "get": _operation(
                "The engine's log tail",
                {"200": _json(OPEN_OBJECT), **_errors(400, 404)},
                params=[
                    _query("tail", {"type": "integer", "minimum": 0, "maximum": 10000}, "Lines")
                ],
            ),
        },
        "/v1/presets": {
            "get": _operation("Built-in, file and active presets", {"200": _json(OPEN_OBJECT)})
        },
        "/v1/presets/{name}": {
            "parameters": [PRESET_NAME],
            "get": _operation("One preset", {"200": _json(OPEN_OBJECT), **_errors(400, 404)}),
            "put": _operation(
                "Set a preset (body: a preset document, or none for a built-in)",
                {"200": change, **_errors(400, 404, 409, 413)},
                params=[NEW_PRESET_NAME, *CHANGE_PARAMS],
                body=_ref("Preset"),
                body_required=False,
                mutating=True,
            ),
            "delete": _operation(
                "Unset a preset",
                {"200": change, **_errors(400, 404)},
                params=CHANGE_PARAMS,
                mutating=True,
            ),
        },
        "/v1/plan": {
            "post": _operation(
                "The plan of a proposed change (changes nothing)",
                {"200": change, **_errors(400, 404, 409, 413)},
                body=_plan_body(runtimes),
                mutating=True,
            )
        },
        "/v1/rollback": {
            "post": _operation(
                "A new generation equal to an older one",
                {"200": change, **_errors(400, 404, 413)},
                params=CHANGE_PARAMS,
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"to": {"type": "integer", "minimum": 0}},
                },
                body_required=False,
                mutating=True,
            )
        },
        "/v1/events": {
            "get": _operation(
                "Events, optionally long-polled",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["events", "last_id"],
                            "properties": {
                                "events": {"type": "array", "items": _ref("Event")},
                                "last_id": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(400),
                },
                params=[
                    _query("after", ROW_ID, "Events after this id"),
                    _query(
                        "wait", {"type": "number", "minimum": 0, "maximum": 60}, "Long-poll seconds"
                    ),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Max"),
                    _query("engine", {"type": "string"}, "Only this engine"),
                ],
            )
        },
        "/v1/generations": {
            "get": _operation(
                "History of the desired state",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["generations"],
                            "properties": {
                                "generations": {"type": "array", "items": _ref("Generation")}
                            },
                        }
                    ),
                    **_errors(400),
                },
                params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Max")],
            )
        },
        "/v1/generations/{generation}": {
            "parameters": [_path("generation", ROW_ID)],
            "get": _operation(
                "One generation", {"200": _json(_ref("Generation")), **_errors(400, 404)}
            ),
        },
        "/v1/gpus": {
            "get": _operation("GPU inventory and reservations", {"200": _json(_ref("Gpus"))})
        },
        "/v1/management/engines": {
            "post": _operation(
                "Seed API: start an engine (EngineStartRequest)",
                {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["engine_id", "generation", "plan"],
                            "properties": {
                                "engine_id": {"type": "string"},
                                "generation": {"type": "integer"},
                                "plan": {"type": "array", "items": _ref("PlanItem")},
                            },
                        }
                    ),
                    **_errors(400, 409, 413),
                },
                body=_seed_start(runtimes),
                mutating=True,
            )
        },
        "/v1/management/engines/{engine_id}": {
            "parameters": [ENGINE_ID],
            "delete": _operation(
                "Seed API: stop an engine", {"200": change, **_errors(404, 409)}, mutating=True
            ),
        },
        "/v1/management/status": {
            "get": _operation(
                "Seed API: GPUs, engines and instances",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["gpus", "engines", "instances"],
                            "properties": {
                                "gpus": _ref("Gpus"),
                                "engines": {"type": "array", "items": _ref("EngineEntry")},
                                "instances": {"type": "array", "items": OPEN_OBJECT},
                            },
                        }
                    )
                },
            )
        },
        "/openapi.json": {"get": _operation("This document", {"200": _json(OPEN_OBJECT)})},
    }
    paths.update(models_routes.OPENAPI_PATHS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sagellm daemon API",
            "version": __version__,
            "description": "Desired state of LLM and embedding engines; see docs/api.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": ERROR_SCHEMA,
                "EngineSpec": _engine_schema(runtimes),
                "Preset": _preset_schema(runtimes),
                "EngineEntry": ENGINE_ENTRY,
                "PlanItem": PLAN_ITEM,
                "ChangeAnswer": CHANGE_ANSWER,
                "Event": EVENT,
                "Generation": GENERATION,
                "Gpus": GPUS,
            },
        },
    }
