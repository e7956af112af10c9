"""Owns the tests of sagellmd/api/openapi.py and sagellmd/schemas/: the published schemas
accept what the validators accept and refuse what they refuse, every route of the table is
described, and the enums are the code's own."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from typing import Any

import jsonschema_rs
import pytest

from sagellmd import spec
from sagellmd.api.management_routes import SEED_FIELDS
from sagellmd.api.openapi import NEW_ENGINE_ID, openapi_document, openapi_path
from sagellmd.api.route_table import ENDPOINTS, Endpoint, RouteDoc
from sagellmd.engine_change import GENERATION_STATES, VERDICTS
from sagellmd.errors import BadInputError, SpecError
from sagellmd.gpu.inventory import GPU_MODES
from sagellmd.instance import InstanceState
from sagellmd.models.download import validate_model_id
from sagellmd.reconcile.actions import Action, StartKind
from sagellmd.schemas.engine import ENGINE_SCHEMA, PRESET_SCHEMA
from sagellmd.schemas.enums import action_types
from sagellmd.schemas.requests import MODEL_ID_SCHEMA
from sagellmd.spec import check_runtime_known, is_valid_name, parse_engine

RUNTIMES = {"vllm": ("python",), "embedding": ("python",)}
DOCUMENT = openapi_document(sorted(RUNTIMES))


def body_schema(path: str, method: str) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    # jsonschema_rs resolves #/components/... against the document it is given.
    return {**schema, "components": DOCUMENT["components"]}


def schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    # jsonschema_rs reads patterns as ECMA-262 does, as OpenAPI clients and fuzzers do.
    return jsonschema_rs.validator_for(schema).is_valid(value)


def engine_accepted(body: dict[str, Any]) -> bool:
    try:
        spec = parse_engine({**body, "name": "x"})
        check_runtime_known(spec, RUNTIMES, "x")
    except SpecError:
        return False
    return True


ENGINE_BODIES: list[dict[str, Any]] = [
    {"model": "Qwen/Qwen2.5-1.5B-Instruct"},
    {"model": ""},
    {"model": "a\x00b"},
    {"model": "m\n"},
    {"model": "m", "label": "\x1b[31m"},
    {"model": "m", "label": "caf\u00e9"},
    {"model": "m", "restart_schedule": "0 0 0 0 0"},
    {"model": "m", "restart_schedule": "60 * * * *"},
    {"model": "m", "restart_schedule": "* * * *"},
    {"model": "m", "restart_schedule": "*/0 * * * *"},
    {"model": "m", "restart_schedule": "0 24 * * *"},
    {"model": "m", "restart_schedule": "0 4 32 * *"},
    {"model": "m", "restart_schedule": "0 4 * 13 *"},
    {"model": "m", "restart_schedule": "0 4 * * 8"},
    {"model": "m", "restart_schedule": "0 4 * * *"},
    {"model": "m", "restart_schedule": "*/2 * * * * *"},
    {"model": "m", "restart_schedule": "30 4 1,15 jan-jun mon"},
    {"model": "m", "restart_schedule": None},
    {"model": "m", "env": {"A\n": "x"}},
    {"model": "m", "env": {"PEM": "a\nb"}},
    {"model": "m", "env": {"A": "\x00"}},
    {"model": "m", "extra_args": ["\x07"]},
    {"model": "m", "extra_args": ["--chat-template", "{{a}}\n{{b}}"]},
    {"model": "m", "runtime": "nope"},
    {"model": "m", "runtime": "embedding", "kind": "embedding"},
    {"model": "m", "port": 0},
    {"model": "m", "tensor_parallel": 65},
    {"model": "m", "metadata": {"a": {"b": [1, "x", None]}}},
]


@pytest.mark.parametrize("body", ENGINE_BODIES, ids=lambda body: repr(body)[:60])
def test_engine_body_schema_agrees_with_the_validator(body):
    for path, method in (("/v1/engines/{engine_id}", "put"),):
        assert schema_accepts(body_schema(path, method), body) == engine_accepted(body), body


@pytest.mark.parametrize("body", ENGINE_BODIES, ids=lambda body: repr(body)[:60])
def test_management_schema_agrees_with_the_validator(body):
    spec_to_seed = {spec: seed for seed, spec in SEED_FIELDS.items()}
    if not set(body) <= set(spec_to_seed):
        pytest.skip("a field the seed API does not have")
    seed_body = {spec_to_seed[key]: value for key, value in body.items()}
    schema = body_schema("/v1/management/engines", "post")
    assert schema_accepts(schema, seed_body) == engine_accepted(body), seed_body


@pytest.mark.parametrize(
    "model_id", ["org/name", "name", "", "a/b/c", "org/na..me", "o" * 97, "org/name\n", "-x"]
)
def test_model_id_schema_agrees_with_the_validator(model_id):
    try:
        validate_model_id(model_id)
        accepted = True
    except BadInputError:
        accepted = False
    assert schema_accepts(MODEL_ID_SCHEMA, model_id) == accepted


@pytest.mark.parametrize("name", ["chat", "chat-2", "Chat", "chat\n", "-chat", "c" * 64, ""])
def test_new_engine_ids_agree_with_the_name_check(name):
    assert schema_accepts(NEW_ENGINE_ID["schema"], name) == is_valid_name(name)


def test_query_ids_are_bounded_like_sqlite_integers():
    events = DOCUMENT["paths"]["/v1/events"]["get"]["parameters"]
    after = next(param for param in events if param["name"] == "after")["schema"]
    assert schema_accepts(after, 2**63 - 1) and not schema_accepts(after, 2**63)


# The generated document: every route of the table, the enums of the code itself.


def _component(name: str) -> dict[str, Any]:
    return DOCUMENT["components"]["schemas"][name]


def test_every_route_of_the_table_has_its_operation():
    for endpoint in ENDPOINTS:
        operation = DOCUMENT["paths"][openapi_path(endpoint.path)][endpoint.method.lower()]
        assert operation["summary"] == endpoint.doc.summary
        if endpoint.needs_token:  # mutations, and reads only the gateway makes (/v1/routes)
            assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"]
        else:
            assert "security" not in operation


def test_every_schema_reference_names_a_component():
    text = json.dumps(DOCUMENT)
    names = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert names and names <= set(DOCUMENT["components"]["schemas"])


def test_a_route_added_to_the_table_is_described():
    async def handler(request: Any) -> Any:
        raise AssertionError("not called")

    extra = Endpoint("POST", "/v1/things/{engine_id}", handler, RouteDoc("Things", errors=(409,)))
    document = openapi_document(sorted(RUNTIMES), [*ENDPOINTS, extra])
    item = document["paths"]["/v1/things/{engine_id}"]
    assert item["parameters"][0]["name"] == "engine_id"
    assert set(item["post"]["responses"]) == {"200", "409", "401"}


def test_enums_are_the_codes_own():
    assert _component("EngineEntry")["properties"]["state"]["enum"] == [
        state.value for state in InstanceState
    ]
    planned = {
        cls.__dataclass_fields__["action"].default
        for cls in typing.get_args(Action)
        if "action" in cls.__dataclass_fields__
    } | {kind.value for kind in StartKind}
    assert set(_component("PlanItem")["properties"]["action"]["enum"]) == planned
    assert _component("Generation")["properties"]["state"]["enum"] == list(GENERATION_STATES)
    changes = _component("Generation")["properties"]["changes"]["items"]
    assert changes["properties"]["verdict"]["enum"] == list(VERDICTS)
    assert _component("Gpus")["properties"]["mode"]["enum"] == list(GPU_MODES)


def test_a_new_action_type_is_written_once():
    @dataclasses.dataclass(frozen=True)
    class Wake:
        engine_id: str
        action: str = "wake"

    assert action_types(Action | Wake)[-1] == "wake"


def test_the_spec_validates_with_the_published_schema():
    assert spec.ENGINE_SCHEMA is ENGINE_SCHEMA and spec.PRESET_SCHEMA is PRESET_SCHEMA
    published = _component("EngineSpec")
    assert published["properties"]["runtime"] == {"enum": sorted(RUNTIMES)}
    assert {**published["properties"], "runtime": None} == {
        **ENGINE_SCHEMA["properties"],
        "runtime": None,
    }
