"""Malformed specs, presets and raw bodies are rejected with a message naming the field,
and neither the store nor any process changes."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Daemon, engine_processes, fake_preset

GOOD = {"model": "fake/solo-1B"}

# (path, body, expected status, substring of the error message)
BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("/v1/engines/solo", "{not json", 400, "body: not valid JSON"),
    ("/v1/engines/solo", "", 400, "body: a JSON object is required"),
    ("/v1/engines/solo", [1, 2], 400, "body: must be a JSON object"),
    ("/v1/engines/solo", "null", 400, "body: must be a JSON object"),
    ("/v1/engines/solo", {}, 400, "model: required field is missing"),
    ("/v1/engines/solo", {**GOOD, "colour": "red"}, 400, "unknown field 'colour'"),
    ("/v1/engines/solo", {**GOOD, "kind": "chat"}, 400, "kind: must be one of: llm, embedding"),
    (
        "/v1/engines/solo",
        {**GOOD, "tensor_parallel": 0},
        400,
        "tensor_parallel: must be an integer >= 1, got 0",
    ),
    ("/v1/engines/solo", {**GOOD, "pipeline_parallel": "2"}, 400, "pipeline_parallel"),
    ("/v1/engines/solo", {**GOOD, "port": 70000}, 400, "port: must be an integer from 1 to 65535"),
    ("/v1/engines/solo", {**GOOD, "port": "80"}, 400, "port:"),
    ("/v1/engines/solo", {**GOOD, "max_concurrent_requests": 0}, 400, "max_concurrent_requests"),
    ("/v1/engines/solo", {**GOOD, "use_gpu": "yes"}, 400, "use_gpu: must be true, false or null"),
    ("/v1/engines/solo", {**GOOD, "gpu_memory_gb": -1}, 400, "gpu_memory_gb"),
    ("/v1/engines/solo", {**GOOD, "extra_args": "--x"}, 400, "extra_args: must be a list"),
    ("/v1/engines/solo", {**GOOD, "extra_args": ["--x", 3]}, 400, "extra_args[1]"),
    ("/v1/engines/solo", {**GOOD, "env": {"A": 1}}, 400, "env.A"),
    ("/v1/engines/solo", {**GOOD, "env": {"1BAD": "x"}}, 400, "env:"),
    ("/v1/engines/solo", {**GOOD, "metadata": []}, 400, "metadata: must be a mapping"),
    ("/v1/engines/solo", {**GOOD, "restart": "sometimes"}, 400, "restart: must be one of"),
    ("/v1/engines/solo", {**GOOD, "startup_timeout_s": 0}, 400, "startup_timeout_s"),
    ("/v1/engines/solo", {**GOOD, "name": "other"}, 400, "name: must equal the engine id"),
    ("/v1/engines/solo", {**GOOD, "runtime": "nope"}, 400, "unknown runtime 'nope'"),
    ("/v1/engines/Bad_Name", GOOD, 400, "engine id 'Bad_Name'"),
    ("/v1/engines/solo", {**GOOD, "model": ""}, 400, "model: must be a non-empty string"),
    ("/v1/presets/p", {"version": 2, "name": "p", "engines": [GOOD]}, 400, "version: must be 1"),
    (
        "/v1/presets/p",
        {"version": 1, "name": "p", "engines": []},
        400,
        "engines: must list between 1 and 64 engines",
    ),
    ("/v1/presets/p", {"version": 1, "name": "p"}, 400, "engines: required field is missing"),
    (
        "/v1/presets/p",
        fake_preset("p", {"name": "a"}, {"name": "b", "tensor_parallel": 0}),
        400,
        "engines[1].tensor_parallel: must be an integer >= 1, got 0",
    ),
    (
        "/v1/presets/p",
        fake_preset("p", {"name": "a"}, {"name": "a"}),
        400,
        "engines[1].name: 'a' is already used by engines[0]",
    ),
    (
        "/v1/presets/p",
        fake_preset("p", {"name": "a", "port": 9000}, {"name": "b", "port": 9000}),
        400,
        "engines[1].port: 9000 is already used by engines[0]",
    ),
    ("/v1/presets/p", fake_preset("q", {"name": "a"}), 400, "name: must equal the preset name"),
    (
        "/v1/presets/p",
        fake_preset("p", {"name": "a", "bogus": 1}),
        400,
        "engines[0]: unknown field 'bogus'",
    ),
    ("/v1/presets/p", "[]", 400, "body: must be a preset document"),
    ("/v1/presets/no-such-preset", None, 404, "no preset named 'no-such-preset'"),
    ("/v1/presets/p", "x" * (1024 * 1024 + 10), 413, "larger than the limit"),
    # Strings and numbers that JSON (or Python's json module) lets through but that no
    # answer could carry back: each was committed before, and then every read was a 500.
    ("/v1/engines/solo", '{"model": "m", "label": "\\ud800"}', 400, "label: not valid Unicode"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"x": NaN}}', 400, "metadata.x: NaN"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"x": Infinity}}', 400, "Infinity"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"x": [-Infinity]}}', 400, "metadata.x[0]"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"x": 1e400}}', 400, "metadata.x: 1e400"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"\\udc00": 1}}', 400, "not valid Unicode"),
    ("/v1/engines/solo", b'{"model": "m", "label": "\xff"}', 400, "body: not valid UTF-8"),
    (
        "/v1/engines/solo",
        '{"model": "m", "metadata": ' + '{"a": ' * 500 + "1" + "}" * 501,
        400,
        "nested deeper than 64 levels",
    ),
    ("/v1/engines/solo", "[" * 100000, 400, "nested deeper than 64 levels"),
    ("/v1/engines/solo", '{"model": "m", "metadata": {"x": ' + "9" * 5000 + "}}", 400, "digits"),
    ("/v1/engines/solo", {**GOOD, "model": "fake/a\x00b"}, 400, "model: must not contain"),
    ("/v1/engines/solo", {**GOOD, "model": "fake/a\nb"}, 400, "model: must not contain"),
    ("/v1/engines/solo", {**GOOD, "label": "a\x1bb"}, 400, "label: must not contain"),
    ("/v1/engines/solo", {**GOOD, "env": {"A": "x\x00y"}}, 400, "env.A: must not contain"),
    ("/v1/engines/solo", {**GOOD, "extra_args": ["--x", "a\x07"]}, 400, "extra_args[1]: must"),
    (
        "/v1/presets/p",
        '{"version": 1, "name": "p", "description": "\\ud800", "engines": [{"name": "a",'
        ' "model": "m"}]}',
        400,
        "description: not valid Unicode",
    ),
    (
        "/v1/presets/p",
        '{"version": 1, "name": "p", "engines": [{"name": "a", "model": "m",'
        ' "metadata": {"x": NaN}}]}',
        400,
        "engines[0].metadata.x: NaN",
    ),
    (
        "/v1/presets/p",
        fake_preset("p", {"name": "a", "model": "fake/\x00"}),
        400,
        "engines[0].model: must not contain",
    ),
]


def _rows(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("active_presets", "desired_engines", "generations", "instances")
        }


def seed(daemon: Daemon) -> Daemon:
    """A daemon with one running engine, so 'nothing changed' has something to compare;
    its rollout judged (the verdict is written min_healthy_s after ready, and would land
    between a test's two reads of the rows)."""
    daemon.put("/v1/presets/base", fake_preset("base", {"name": "keep", "port": None}))
    daemon.wait_state("base.keep", "ready")

    def judged() -> bool:
        generations = daemon.get("/v1/generations").json()["generations"]
        return all(generation["healthy"] is not None for generation in generations)

    daemon.wait_for(judged, 20, "the seed's rollout verdict")
    return daemon


@pytest.fixture(scope="module")
def seeded(module_daemon: Daemon) -> Daemon:
    """One seeded daemon for the tests whose requests are all refused: none changes it."""
    return seed(module_daemon)


@pytest.fixture
def fresh_seeded(daemon: Daemon) -> Daemon:
    """A seeded daemon of its own, for a test that declares more engines."""
    return seed(daemon)


def test_bad_requests_are_rejected_and_change_nothing(seeded: Daemon):
    assert len(BAD_REQUESTS) >= 30
    rows_before = _rows(seeded)
    pids_before = sorted(p.pid for p in engine_processes(seeded.home))
    failures = []
    for path, body, status, needle in BAD_REQUESTS:
        try:
            response = seeded.put(path, body)
        except httpx.TransportError as exc:  # the daemon dropped the connection
            failures.append((path, "<body>", "no answer", repr(exc)))
            continue
        is_json = response.headers.get("content-type", "").startswith("application/json")
        error = response.json().get("error", {}) if is_json else {}
        if (
            response.status_code != status
            or needle not in error.get("message", "")
            or set(error) != {"code", "message", "details"}
        ):
            failures.append(
                (
                    path,
                    body if len(str(body)) < 80 else "<long>",
                    response.status_code,
                    error.get("message") if is_json else response.text[:100],
                )
            )
    assert not failures, failures
    assert _rows(seeded) == rows_before
    assert sorted(p.pid for p in engine_processes(seeded.home)) == pids_before


def test_mutations_need_the_token_and_bad_queries_are_400(seeded: Daemon):
    rows_before = _rows(seeded)
    no_token = seeded.client.put("/v1/engines/x", json=GOOD)
    assert no_token.status_code == 401
    assert "Bearer" in no_token.json()["error"]["message"]
    wrong = seeded.client.delete("/v1/presets/base", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert seeded.get("/v1/events", params={"after": "x"}).status_code == 400
    assert seeded.get("/v1/events", params={"wait": "999"}).status_code == 400
    assert seeded.get("/v1/engines/base.keep/logs", params={"tail": "-1"}).status_code == 400
    assert seeded.delete("/v1/engines/nope").status_code == 404
    conflict = seeded.delete("/v1/engines/base.keep")
    assert conflict.status_code == 409
    assert "sagellm preset unset base" in conflict.json()["error"]["message"]
    assert seeded.delete("/v1/presets/not-active").status_code == 404
    assert seeded.get("/v1/nothing-here").status_code == 404
    assert _rows(seeded) == rows_before


def test_a_port_clash_between_engines_is_a_conflict(fresh_seeded: Daemon):
    seeded = fresh_seeded
    seeded.put("/v1/engines/fixed", {**GOOD, "port": 40123})
    rows_before = _rows(seeded)
    response = seeded.put("/v1/engines/other", {**GOOD, "port": 40123})
    assert response.status_code == 409
    assert "port 40123 is already declared by engine 'fixed'" in response.json()["error"]["message"]
    assert _rows(seeded) == rows_before


def test_management_api_refuses_what_no_answer_could_carry(seeded: Daemon):
    rows_before = _rows(seeded)
    for body, needle in [
        ('{"model_id": "m", "label": "\\ud800"}', "label: not valid Unicode"),
        ('{"model_id": "m", "metadata": {"x": NaN}}', "metadata.x: NaN"),
        ('{"model_id": "m\\u0000x"}', "model_id: must not contain"),
    ]:
        response = seeded.client.post(
            "/v1/management/engines",
            content=body,
            headers={**seeded.auth(), "content-type": "application/json"},
        )
        assert response.status_code == 400, (body, response.text)
        assert needle in response.json()["error"]["message"], response.text
    assert _rows(seeded) == rows_before
    for path in ("/v1/status", "/v1/engines", "/v1/presets", "/v1/generations"):
        assert seeded.get(path).status_code == 200, path


# (path, query parameters, substring of the error message); every one was a 500 or a 200.
BAD_QUERIES: list[tuple[str, Any, str]] = [
    ("/v1/events", {"wait": "nan"}, "query parameter wait: must be a number"),
    ("/v1/events", {"wait": "inf"}, "query parameter wait"),
    ("/v1/events", {"wait": "\u0665"}, "query parameter wait: must be a number"),
    ("/v1/events", {"wait": "1_0"}, "query parameter wait: must be a number"),
    ("/v1/events", {"after": "9223372036854775808"}, "query parameter after: must be"),
    ("/v1/events", {"after": "\u0661\u0662"}, "query parameter after: must be an integer"),
    ("/v1/events", {"after": "1_000"}, "query parameter after: must be an integer"),
    ("/v1/events", {"limit": "1e3"}, "query parameter limit: must be an integer"),
    ("/v1/generations", {"limit": "nan"}, "query parameter limit"),
    ("/v1/engines/base.keep/logs", {"tail": "NaN"}, "query parameter tail"),
    ("/v1/generations/99999999999999999999", {}, "generation: must be"),
    ("/v1/generations/%C2%B2", {}, "generation: must be"),
    ("/v1/events", [("wait", "1"), ("wait", "2")], "query parameter wait: given 2 times"),
    ("/v1/events", [("after", "1"), ("after", "1")], "query parameter after: given 2 times"),
]


def test_bad_queries_are_json_400s(seeded: Daemon):
    failures = []
    for path, params, needle in BAD_QUERIES:
        try:
            response = seeded.get(path, params=params)
        except httpx.TransportError as exc:
            failures.append((path, params, "no answer", repr(exc)))
            continue
        is_json = response.headers.get("content-type", "").startswith("application/json")
        message = response.json().get("error", {}).get("message", "") if is_json else ""
        if response.status_code != 400 or needle not in message:
            failures.append((path, params, response.status_code, response.text[:200]))
    assert not failures, failures


def test_a_repeated_change_parameter_is_refused_and_changes_nothing(seeded: Daemon):
    rows_before = _rows(seeded)
    response = seeded.client.put(
        "/v1/engines/solo?dry_run=true&dry_run=false", json=GOOD, headers=seeded.auth()
    )
    assert response.status_code == 400, response.text
    assert "query parameter dry_run: given 2 times" in response.json()["error"]["message"]
    assert _rows(seeded) == rows_before


def test_an_invalid_row_left_by_an_older_version_is_shown_not_fatal(make_daemon):
    """Older versions committed lone surrogates and NaN; status must still be served."""
    daemon: Daemon = make_daemon()
    assert daemon.put("/v1/engines/old", GOOD).status_code == 201
    daemon.wait_state("old", "ready")
    assert daemon.put("/v1/presets/p", fake_preset("p", {"name": "a"})).status_code == 200
    daemon.wait_state("p.a", "ready")
    assert daemon.stop() == 0
    # What an older daemon wrote: json.dumps keeps a lone surrogate as \ud800, writes NaN
    # and Infinity as bare words, and a NUL byte in a model as \u0000.
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        for table, column, key in (
            ("desired_engines", "spec", "id"),
            ("active_presets", "document", "name"),
            ("generations", "snapshot", "id"),
        ):
            for row_key, text in connection.execute(f"SELECT {key}, {column} FROM {table}"):
                text = text.replace('"label": null', '"label": "\\ud800"')
                text = text.replace('"metadata": {}', '"metadata": {"x": NaN, "y": Infinity}')
                connection.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (text, row_key)
                )
        row = connection.execute("SELECT spec FROM desired_engines WHERE id = 'old'").fetchone()
        assert "\\ud800" in row[0] and "NaN" in row[0], row
        connection.execute(
            "UPDATE desired_engines SET spec = replace(spec, ?, ?) WHERE id = 'old'",
            ('"model": "fake/solo-1B"', '"model": "fake/a\\u0000b"'),
        )
    daemon.start()
    for path in (
        "/v1/status",
        "/v1/engines",
        "/v1/engines/old",
        "/v1/presets",
        "/v1/presets/p",
        "/v1/generations",
        "/v1/generations/1",
        "/v1/management/status",
    ):
        response = daemon.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    entries = {entry["id"]: entry for entry in daemon.get("/v1/status").json()["engines"]}
    assert entries["old"]["invalid"] and "label" in entries["old"]["invalid"]
    assert "model" in entries["old"]["invalid"]
    assert "stored spec is invalid" in entries["old"]["message"]
    assert entries["p.a"]["invalid"] and "metadata.x" in entries["p.a"]["invalid"]
    # The rest of the desired state is served as it was.
    assert entries["p.a"]["model"] == "fake/model-1B"
    cli = daemon.cli("status")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "old" in cli.stdout
    # Declaring the engine again with valid values repairs it.
    assert daemon.put("/v1/engines/old", GOOD).status_code == 200
    assert daemon.engine("old")["invalid"] is None
    daemon.wait_state("old", "ready")


def test_a_port_in_use_by_an_engine_or_the_api_is_a_conflict_at_once(fresh_seeded: Daemon):
    seeded = fresh_seeded
    picked = seeded.engine("base.keep")["port"]  # chosen automatically, in use by its process
    assert picked is not None
    rows_before = _rows(seeded)
    cases = [
        ("/v1/engines/other", {**GOOD, "port": picked}, f"port {picked} is in use by engine"),
        ("/v1/engines/other", {**GOOD, "port": seeded.port}, "the daemon's own API port"),
        ("/v1/presets/q", fake_preset("q", {"name": "a", "port": picked}), "'base.keep'"),
        ("/v1/presets/q", fake_preset("q", {"name": "a", "port": seeded.port}), "API port"),
    ]
    for path, body, needle in cases:
        response = seeded.put(path, body)
        assert response.status_code == 409, (path, response.text)
        assert needle in response.json()["error"]["message"], response.text
    management = seeded.client.post(
        "/v1/management/engines",
        json={"model_id": "fake/m-1B", "port": picked},
        headers=seeded.auth(),
    )
    assert management.status_code == 409, management.text
    assert "'base.keep'" in management.json()["error"]["message"]
    assert _rows(seeded) == rows_before
    # The engine that holds the port may keep it in a change of its own preset.
    again = seeded.put("/v1/presets/base", fake_preset("base", {"name": "keep", "port": picked}))
    assert again.status_code == 200, again.text


ROLLBACK_REFUSED = 'body: must be {"to": GENERATION} or empty (the last healthy one)'
SEED_FIELDS_TEXT = (
    "model_id, engine_kind, port, tensor_parallel_size, pipeline_parallel_size, use_gpu,"
    " label, max_concurrent_requests, metadata"
)
# (path, body, the whole message): these checks read their rules from sagellmd/schemas/ now
# and must still say what they said when the rules were written out by hand.
SCHEMA_CHECKED_BODIES: list[tuple[str, Any, str]] = [
    ("/v1/rollback", [], ROLLBACK_REFUSED),
    ("/v1/rollback", {"to": 1, "x": 1}, ROLLBACK_REFUSED),
    ("/v1/rollback", {"to": "two"}, "to: must be a generation number >= 0, got 'two'"),
    ("/v1/rollback", {"to": -1}, "to: must be a generation number >= 0, got -1"),
    ("/v1/rollback", {"to": True}, "to: must be a generation number >= 0, got True"),
    ("/v1/rollback", {"to": 1.5}, "to: must be a generation number >= 0, got 1.5"),
    ("/v1/management/engines", [], "body: must be an EngineStartRequest object"),
    (
        "/v1/management/engines",
        {"model": "m"},
        f"(document): unknown field 'model'; allowed fields: {SEED_FIELDS_TEXT}",
    ),
    (
        "/v1/management/engines",
        {"model_id": ""},
        "model_id: required; a Hugging Face id or a local path",
    ),
    (
        "/v1/management/engines",
        {"model_id": 3},
        "model_id: required; a Hugging Face id or a local path",
    ),
]


def test_schema_checked_bodies_keep_their_messages(seeded: Daemon):
    for path, body, message in SCHEMA_CHECKED_BODIES:
        response = seeded.post(path, body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["message"] == message, (path, body)
    # 0.0 is the integer 0 to JSON Schema and to the store.
    answer = seeded.post("/v1/rollback?dry_run=true", {"to": 0.0})
    assert answer.status_code == 200 and answer.json()["to"] == 0, answer.text
