"""The JSON Schemas of the API's answers, each named as the OpenAPI document names it."""

from __future__ import annotations

from typing import Any

from sagellmd.schemas.enums import (
    GENERATION_STATES,
    GPU_MODES,
    INSTANCE_STATES,
    VERDICTS,
    enum,
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
OPEN_OBJECT = {"type": "object"}

ENGINE_ENTRY = _object(
    {
        "id": STRING,
        "preset": NULLABLE_STRING,
        "name": STRING,
        "kind": NULLABLE_STRING,
        "model": NULLABLE_STRING,
        "runtime": NULLABLE_STRING,
        "label": NULLABLE_STRING,
        "desired": BOOLEAN,
        "invalid": NULLABLE_STRING,
        "state": enum(INSTANCE_STATES),
        "pid": NULLABLE_INT,
        "port": NULLABLE_INT,
        "gpus": _array(INTEGER),
        "gpu_memory_gb": {"type": ["number", "null"]},
        "restarts": INTEGER,
        "message": STRING,
        "spec": {"type": ["object", "null"]},
        "metadata": OPEN_OBJECT,
        # A disaggregated engine: its block, and each of its instances as an entry of its own.
        "disaggregated": {"type": ["object", "null"]},
        "instances": _array(ref("EngineEntry")),
        "role": enum(("prefill", "decode")),
        "side_ports": _array(INTEGER),
        # /v1/status only: the gateway's last report (null without a recent one).
        "inflight": NULLABLE_INT,
        "queued": NULLABLE_INT,
    },
    ("id", "preset", "name", "kind", "model", "runtime", "state", "pid", "port", "restarts")
    + ("label", "message"),
)


def plan_item(action_types: tuple[str, ...]) -> dict[str, Any]:
    """One planned action; the loop's action types come from reconcile/actions.py."""
    return _object(
        {
            "action": enum(action_types),
            "engine": STRING,
            "reason": STRING,
            "gpus": _array(INTEGER),
            "gpu_bytes": INTEGER,
        },
        ("action", "engine", "reason"),
    )


PLAN = _array(ref("PlanItem"))
CHANGE_ANSWER = _object(
    {"generation": INTEGER, "dry_run": BOOLEAN, "plan": PLAN}, ("generation", "plan")
)
EVENT = _object(
    {
        "id": INTEGER,
        "ts": STRING,
        "engine": NULLABLE_STRING,
        "type": STRING,
        "message": STRING,
        "generation": NULLABLE_INT,
    },
    ("id", "ts", "engine", "type", "message", "generation"),
)
ENGINE_CHANGE = _object(
    {
        "engine": STRING,
        "removed": BOOLEAN,
        "verdict": enum(VERDICTS),
        "reason": STRING,
        "superseded_by": NULLABLE_INT,
    },
    ("engine", "removed", "verdict", "reason", "superseded_by"),
)
GENERATION = _object(
    {
        "id": INTEGER,
        "ts": STRING,
        "cause": STRING,
        "healthy": {"type": ["boolean", "null"]},
        "state": enum(GENERATION_STATES),
        "verdict": NULLABLE_STRING,
        "auto_rollback": BOOLEAN,
        "reverts": NULLABLE_INT,
        "presets": _array(STRING),
        "engines": _array(OPEN_OBJECT),
        "changes": _array(ENGINE_CHANGE),
    },
    ("id", "ts", "cause", "healthy", "engines"),
)
GPUS = _object(
    {
        "mode": enum(GPU_MODES),
        "simulated": BOOLEAN,
        "message": STRING,
        "headroom": {"type": "number"},
        "devices": _array(OPEN_OBJECT),
    },
    ("mode", "simulated", "message", "devices"),
)
NODE = _object(
    {
        "name": STRING,
        "address": STRING,
        "local": BOOLEAN,
        "alive": BOOLEAN,
        "dead_since": NULLABLE_STRING,
        "usable": BOOLEAN,
        "ray_node_id": STRING,
        "gpus": _array(OPEN_OBJECT),
        "agent": {"type": ["object", "null"]},
        "engines": _array(STRING),
        "message": NULLABLE_STRING,
    },
    ("name", "address", "alive", "gpus", "engines"),
)
ERROR = _object(
    {
        "error": _object(
            {"code": STRING, "message": STRING, "details": OPEN_OBJECT},
            ("code", "message", "details"),
        )
    },
    ("error",),
)
ENGINES = _array(ref("EngineEntry"))
ROUTE_ENTRY = _object(
    {
        "id": STRING,
        "state": enum((*INSTANCE_STATES, "absent")),
        "ready": BOOLEAN,
        "url": NULLABLE_STRING,
        "served_model": STRING,
        "names": _array(STRING),
        "label": NULLABLE_STRING,
        "aliases": _array(STRING),
        "kind": STRING,
        "runtime": STRING,
        "endpoints": _array(STRING),
        "max_concurrent_requests": INTEGER,
        "metadata": OPEN_OBJECT,
        "startup_timeout_s": {"type": "number"},
        "message": STRING,
        # One instance of a disaggregated engine: its group, role and index (null: none).
        "pd": {
            "type": ["object", "null"],
            "properties": {
                "group": STRING,
                "role": enum(("prefill", "decode")),
                "index": INTEGER,
                "connector": STRING,
                "threshold_input_tokens": NULLABLE_INT,
            },
            "required": ["group", "role", "index", "connector", "threshold_input_tokens"],
        },
    },
    ("id", "state", "ready", "url", "served_model", "names", "label", "aliases", "kind")
    + ("runtime", "endpoints", "max_concurrent_requests", "metadata", "startup_timeout_s")
    + ("message", "pd"),
)
GATEWAY_STATUS = _object(
    {
        "enabled": BOOLEAN,
        "state": STRING,
        "url": STRING,
        "pid": NULLABLE_INT,
        "restarts": INTEGER,
        "message": NULLABLE_STRING,
        "totals": {"type": ["object", "null"]},
        "reported_at": NULLABLE_STRING,
    },
    ("enabled", "state", "url", "pid", "totals", "reported_at"),
)


def response_schemas(action_types: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every answer by the name routes give it; an operation's responses refer to these."""
    return {
        "Error": ERROR,
        "EngineEntry": ENGINE_ENTRY,
        "PlanItem": plan_item(action_types),
        "ChangeAnswer": CHANGE_ANSWER,
        "Event": EVENT,
        "Generation": GENERATION,
        "Gpus": GPUS,
        "Node": NODE,
        "NodeList": _object(
            {"cluster": {"type": ["object", "null"]}, "nodes": _array(ref("Node"))},
            ("cluster", "nodes"),
        ),
        "Object": OPEN_OBJECT,
        "PrometheusText": STRING,
        # The models routes' answers are documented in docs/api.md only.
        "Any": {},
        "EngineList": _object({"engines": ENGINES}, ("engines",)),
        "Status": _object(
            {
                "generation": INTEGER,
                "daemon": OPEN_OBJECT,
                "gpus": ref("Gpus"),
                "nodes": _array(ref("Node")),
                "presets": _array(STRING),
                "engines": ENGINES,
                "gateway": ref("GatewayStatus"),
            },
            ("generation", "daemon", "gpus", "engines", "gateway"),
        ),
        "RouteEntry": ROUTE_ENTRY,
        "RouteTable": _object(
            {"version": INTEGER, "engines": _array(ref("RouteEntry"))}, ("version", "engines")
        ),
        "GatewayStatus": GATEWAY_STATUS,
        "EventPage": _object(
            {"events": _array(ref("Event")), "last_id": INTEGER, "load_changed": BOOLEAN},
            ("events", "last_id"),
        ),
        "GenerationList": _object({"generations": _array(ref("Generation"))}, ("generations",)),
        "SeedStarted": _object(
            {"engine_id": STRING, "generation": INTEGER, "plan": PLAN},
            ("engine_id", "generation", "plan"),
        ),
        "UiCode": _object(
            {"code": STRING, "url": STRING, "expires_at": STRING}, ("code", "url", "expires_at")
        ),
        "SeedStatus": _object(
            {"gpus": ref("Gpus"), "engines": ENGINES, "instances": _array(OPEN_OBJECT)},
            ("gpus", "engines", "instances"),
        ),
    }
