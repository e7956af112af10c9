"""The OpenAPI 3.1 document, generated from the route table and the schemas in sagellmd/schemas/."""

from __future__ import annotations

import re
from typing import Any

from sagellmd import __version__
from sagellmd.api.route_table import ENDPOINTS, Endpoint
from sagellmd.reconcile.actions import Action
from sagellmd.schemas.engine import NAME_SCHEMA
from sagellmd.schemas.enums import action_types
from sagellmd.schemas.requests import MODEL_ID_SCHEMA, QUERY_PARAMETERS, ROW_ID, request_schemas
from sagellmd.schemas.responses import ref, response_schemas


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _path(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "path", "required": True, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


# Path parameters by the name in the route's template; what reads answer 404 for is any string.
PATH_PARAMETERS = {
    "engine_id": _path("engine_id", {"type": "string"}),
    "name": _path("name", {"type": "string"}),
    "generation": _path("generation", ROW_ID),
    "model_id": _path("model_id", MODEL_ID_SCHEMA, "org/name; the slash is part of the path"),
}
# A PUT checks the name itself (400): its path parameter is the name's own schema.
NEW_ENGINE_ID = _path("engine_id", NAME_SCHEMA)
NEW_PRESET_NAME = _path("name", NAME_SCHEMA)
QUERY_DESCRIPTIONS = {
    "dry_run": "Compute the plan; change nothing.",
    "rollback": "Roll a failed rollout back (default true).",
    "tail": "Lines",
    "after": "Events after this id (/v1/events); the route table version held (/v1/routes);"
    " the byte offset to read after (logs)",
    "wait": "Long-poll seconds",
    "limit": "Max",
    "engine": "Only this engine",
    "load": "Also answer when the gateway's in-flight or queued counts change (load_changed)",
}
PARAMETERS = {
    "new_engine_id": NEW_ENGINE_ID,
    "new_preset_name": NEW_PRESET_NAME,
    **{
        name: _query(name, schema, QUERY_DESCRIPTIONS.get(name, ""))
        for name, schema in QUERY_PARAMETERS.items()
    },
}


def openapi_path(template: str) -> str:
    """Starlette's `{model_id:path}` is `{model_id}` in OpenAPI."""
    return re.sub(r":\w+}", "}", template)


def _content(media_type: str, schema_name: str) -> dict[str, Any]:
    return {media_type: {"schema": ref(schema_name)}}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    doc = endpoint.doc
    # An answer without a schema name has no body (204).
    responses: dict[str, Any] = {
        status: {"description": "OK", "content": _content(doc.media_type, name)}
        if name
        else {"description": "No content"}
        for status, name in doc.answers.items()
    }
    errors = (*doc.errors, 401) if endpoint.needs_token else doc.errors
    for code in errors:
        responses[str(code)] = {
            "description": "Error",
            "content": _content("application/json", "Error"),
        }
    operation: dict[str, Any] = {"summary": doc.summary, "responses": responses}
    if doc.params:
        operation["parameters"] = [PARAMETERS[name] for name in doc.params]
    if doc.body is not None:
        content: dict[str, Any] = {}
        for media_type in doc.body_media_types:
            content.update(_content(media_type, doc.body))
        operation["requestBody"] = {"required": doc.body_required, "content": content}
    if endpoint.needs_token:
        operation["security"] = [{"bearer": []}]
    return operation


def paths(endpoints: list[Endpoint]) -> dict[str, Any]:
    """One path item per route template: its path parameters, then one operation per method."""
    items: dict[str, Any] = {}
    for endpoint in endpoints:
        item = items.setdefault(openapi_path(endpoint.path), {})
        names = re.findall(r"{(\w+)(?::\w+)?}", endpoint.path)
        if names:
            item["parameters"] = [PATH_PARAMETERS[name] for name in names]
        item[endpoint.method.lower()] = _operation(endpoint)
    return items


def openapi_document(runtimes: list[str], endpoints: list[Endpoint] = ENDPOINTS) -> dict[str, Any]:
    """The document /openapi.json serves: this daemon's routes, with its configured runtimes."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sagellm daemon API",
            "version": __version__,
            "description": "Desired state of LLM and embedding engines; see docs/api.md.",
        },
        "paths": paths(endpoints),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**response_schemas(action_types(Action)), **request_schemas(runtimes)},
        },
    }
