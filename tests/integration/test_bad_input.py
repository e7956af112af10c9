"""Malformed specs, presets and raw bodies are rejected with a message naming the field,
and neither the store nor any process changes."""

from __future__ import annotations

import sqlite3
from typing import Any

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
]


def _rows(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("active_presets", "desired_engines", "generations", "instances")
        }


@pytest.fixture
def seeded(daemon: Daemon) -> Daemon:
    """A daemon with one running engine, so 'nothing changed' has something to compare."""
    daemon.put("/v1/presets/base", fake_preset("base", {"name": "keep", "port": None}))
    daemon.wait_state("base.keep", "ready")
    return daemon


def test_bad_requests_are_rejected_and_change_nothing(seeded: Daemon):
    assert len(BAD_REQUESTS) >= 30
    rows_before = _rows(seeded)
    pids_before = sorted(p.pid for p in engine_processes(seeded.home))
    failures = []
    for path, body, status, needle in BAD_REQUESTS:
        response = seeded.put(path, body)
        error = response.json().get("error", {}) if response.content else {}
        if response.status_code != status or needle not in error.get("message", ""):
            failures.append(
                (
                    path,
                    body if len(str(body)) < 80 else "<long>",
                    response.status_code,
                    error.get("message"),
                )
            )
        assert set(error) == {"code", "message", "details"}
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


def test_a_port_clash_between_engines_is_a_conflict(seeded: Daemon):
    seeded.put("/v1/engines/fixed", {**GOOD, "port": 40123})
    rows_before = _rows(seeded)
    response = seeded.put("/v1/engines/other", {**GOOD, "port": 40123})
    assert response.status_code == 409
    assert "port 40123 is already declared by engine 'fixed'" in response.json()["error"]["message"]
    assert _rows(seeded) == rows_before
