"""The Python client's pure parts: picking a model, reading a preset argument, reading errors,
and the CLI's exit codes for its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from sagellmd.cli.inference_commands import as_cli_error
from sagellmd.client import ClientError
from sagellmd.client.errors import from_response
from sagellmd.client.inference import EMBEDDING, LLM, as_messages, checked_options, pick_model
from sagellmd.client.management import preset_document
from sagellmd.errors import BadInputError, DaemonUnreachableError, SagellmError


def entry(name: str, kind: str | None, *engines: str) -> dict:
    listed = {"id": name, "engines": [{"id": e, "state": "ready"} for e in engines]}
    if kind is not None:
        listed["kind"] = kind
    return listed


def test_pick_model_takes_the_only_model_of_the_kind_aliases_included():
    entries = [
        entry("alias", LLM, "p.chat"),
        entry("fake/embedder", EMBEDDING, "p.embed"),
        entry("fake/model", LLM, "p.chat"),
    ]
    assert pick_model(entries, LLM, "gw") == "alias"
    assert pick_model(entries, EMBEDDING, "gw") == "fake/embedder"


def test_pick_model_refuses_two_models_and_none_naming_them():
    entries = [entry("a", LLM, "p.a"), entry("b", LLM, "p.b"), entry("b2", LLM, "p.b")]
    with pytest.raises(ClientError) as caught:
        pick_model(entries, LLM, "the gateway at X")
    assert caught.value.code == "ambiguous_model"
    assert "a, b / b2" in caught.value.message and "model=" in caught.value.message
    with pytest.raises(ClientError) as caught:
        pick_model(entries, EMBEDDING, "the gateway at X")
    assert caught.value.code == "no_model" and "the gateway at X" in caught.value.message


def test_pick_model_counts_an_entry_without_kind_for_either_kind():
    entries = [entry("old", None, "e")]
    assert pick_model(entries, LLM, "gw") == pick_model(entries, EMBEDDING, "gw") == "old"


def test_preset_document_reads_names_dicts_and_yaml():
    assert preset_document("qwen-mini") == ("qwen-mini", None)
    document = {"version": 1, "name": "x", "engines": []}
    assert preset_document(document) == ("x", document)
    assert preset_document("version: 1\nname: y\nengines: []\n") == (
        "y",
        {"version": 1, "name": "y", "engines": []},
    )
    for bad, words in (
        ("[1, 2]", "got list"),
        ("name: [unclosed", "neither a preset name nor valid YAML"),
        ({"engines": []}, "no `name`"),
    ):
        with pytest.raises(ClientError) as caught:
            preset_document(bad)
        assert words in caught.value.message and caught.value.code == "invalid_input"


def test_messages_and_options_are_checked_before_sending():
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    for bad in ([], ["hi"]):
        with pytest.raises(ClientError):
            as_messages(bad)
    assert checked_options({"max_tokens": 3}) == {"max_tokens": 3}
    with pytest.raises(ClientError, match="'stream'"):
        checked_options({"stream": True})


def test_errors_carry_the_servers_message_in_either_shape():
    openai = httpx.Response(
        404, json={"error": {"message": "no model 'x'", "type": "t", "code": "model_not_found"}}
    )
    error = from_response(openai, "the gateway at G")
    assert (error.status, error.code) == (404, "model_not_found")
    assert error.message == "the gateway at G answered HTTP 404: no model 'x'"
    daemon = httpx.Response(409, json={"error": {"code": "conflict", "message": "taken"}})
    assert from_response(daemon, "D").code == "conflict"
    plain = from_response(httpx.Response(502, text="bad gateway"), "D")
    assert (plain.status, plain.code, plain.message) == (
        502,
        None,
        "D answered HTTP 502: bad gateway",
    )


def test_cli_exit_codes_of_client_errors():
    assert isinstance(
        as_cli_error(ClientError("x", None, "gateway_unreachable")), DaemonUnreachableError
    )
    assert isinstance(as_cli_error(ClientError("x", 404, "model_not_found")), BadInputError)
    assert isinstance(as_cli_error(ClientError("x", None, "invalid_input")), BadInputError)
    for status, code in ((502, "engine_unavailable"), (429, "queue_full"), (None, "timeout")):
        failed = as_cli_error(ClientError("x", status, code))
        assert type(failed) is SagellmError and failed.exit_code == 1


def test_importing_the_client_loads_nothing_of_the_daemon():
    code = (
        "import json, sys, sagellmd.client;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sagellmd'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(loaded.stdout) == [
        "sagellmd",
        "sagellmd.client",
        "sagellmd.client.core",
        "sagellmd.client.errors",
        "sagellmd.client.http",
        "sagellmd.client.inference",
        "sagellmd.client.locate",
        "sagellmd.client.management",
    ]
