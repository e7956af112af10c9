"""The API's body checks read their field sets and value rules from sagellmd/schemas/ and
still answer with the messages they gave when the rules were written out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from sagellmd.api.desired_routes import _check_plan_body
from sagellmd.api.models_routes import _download_request
from sagellmd.errors import BadInputError
from sagellmd.schemas.requests import DOWNLOAD_BODY, plan_variants
from sagellmd.schemas.validator import is_valid

KINDS = "preset_set, preset_unset, engine_put, engine_delete"
PLAN_REFUSALS: list[tuple[Any, str]] = [
    (None, f"change: must be one of {KINDS}, got None"),
    ([], f"change: must be one of {KINDS}, got []"),
    ({"change": 3}, f"change: must be one of {KINDS}, got {{'change': 3}}"),
    ({"change": "nope"}, f"change: must be one of {KINDS}, got {{'change': 'nope'}}"),
    (
        {"change": "preset_set"},
        "body: preset_set needs fields change, name (optional: document); missing name",
    ),
    (
        {"change": "preset_set", "name": "a", "x": 1},
        "body: preset_set needs fields change, name (optional: document); unknown x",
    ),
    (
        {"change": "engine_put", "id": "a"},
        "body: engine_put needs fields change, id, spec; missing spec",
    ),
    (
        {"change": "engine_put", "id": "Bad", "spec": {}},
        "id: must be an engine or preset name, got 'Bad'",
    ),
    ({"change": "engine_put", "id": "a", "spec": []}, "spec: must be a JSON object, got list"),
    (
        {"change": "preset_set", "name": 5, "document": "x"},
        "name: must be an engine or preset name, got 5",
    ),
    (
        {"change": "preset_set", "name": "ok", "document": 1},
        "document: must be a JSON object, got int",
    ),
    (
        {"change": "engine_delete", "id": "a" * 64},
        f"id: must be an engine or preset name, got {'a' * 64!r}",
    ),
]


@pytest.mark.parametrize(("body", "message"), PLAN_REFUSALS, ids=lambda v: repr(v)[:40])
def test_plan_body_refusals_keep_their_messages(body, message):
    with pytest.raises(BadInputError) as refused:
        _check_plan_body(body)
    assert refused.value.message == message


def test_plan_body_accepts_every_variant_of_the_schema():
    for change, schema in plan_variants({"type": "object"}, {"type": "object"}).items():
        body = {"change": change, "name": "p", "id": "e", "spec": {}, "document": {}}
        body = {key: value for key, value in body.items() if key in schema["properties"]}
        assert is_valid(schema, body)
        assert _check_plan_body(body) == change


DOWNLOAD_REFUSALS: list[tuple[Any, str]] = [
    ([], 'body: must be a JSON object like {"id": "org/name"}'),
    (
        {"id": "a/b", "branch": "x"},
        "body: unknown field(s) branch; known: id, revision, allow_patterns",
    ),
    ({"id": "a/b", "revision": ""}, "revision: must be a branch, tag or commit hash, got ''"),
    ({"id": "a/b", "revision": "  "}, "revision: must be a branch, tag or commit hash, got '  '"),
    ({"id": "a/b", "revision": 3}, "revision: must be a branch, tag or commit hash, got 3"),
]


@pytest.mark.parametrize(("body", "message"), DOWNLOAD_REFUSALS, ids=lambda v: repr(v)[:40])
def test_download_body_refusals_keep_their_messages(body, message):
    with pytest.raises(BadInputError) as refused:
        _download_request(body)
    assert refused.value.message == message


@pytest.mark.parametrize("revision", [None, "main", "0" * 40])
def test_download_body_accepts_what_its_schema_accepts(revision):
    body = {"id": "a/b", "revision": revision}
    assert is_valid(DOWNLOAD_BODY, body)
    assert _download_request(body) == ("a/b", revision, None)
