"""The `sagellm` CLI without a daemon: local preset commands, exit codes, and a stand-in API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sagellmd.cli.app import app
from sagellmd.cli.client import ApiClient, error_from_response
from sagellmd.cli.context import CliContext
from sagellmd.cli.engine_commands import slug
from sagellmd.cli.waiting import Progress, Rollout, follow_rollout, judge
from sagellmd.errors import (
    ConflictError,
    NotFoundError,
    SagellmError,
    SpecError,
    UnauthorizedError,
)

REPO = Path(__file__).resolve().parents[2]

GOOD_PRESET = """\
version: 1
name: tiny
description: one embedding engine
engines:
  - name: embed
    kind: embedding
    model: some/model
"""

BAD_PRESET = """\
version: 1
name: tiny
engines:
  - name: chat
    model: some/model
    tensor_parallel: 0
"""


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL on a port that is bound (so nobody else takes it) but never accepts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def env(tmp_path: Path, dead_url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("SAGELLM_TOKEN", "STATE_DIRECTORY", "SAGELLM_CONFIG")}
    environ["SAGELLM_HOME"] = str(tmp_path / "home")
    environ["SAGELLM_URL"] = dead_url
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ["COLUMNS"] = "200"
    return environ


def sagellm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagellmd.cli.app", *args],
        env=env, capture_output=True, text=True, timeout=20,
    )


# --- the real CLI as a subprocess, no daemon ------------------------------------------


def test_preset_list_shows_builtins_without_daemon(env):
    result = sagellm(env, "preset", "list")
    assert result.returncode == 0, result.stderr
    for name in ("minilm-cpu", "qwen-mini", "qwen-plus-embeddings"):
        assert name in result.stdout
    assert "ACTIVE" not in result.stdout


def test_preset_list_json(env):
    result = sagellm(env, "preset", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["presets"]}
    assert rows["qwen-mini"]["engines"] == ["chat", "embed"]
    assert rows["minilm-cpu"]["source"] == "builtin"
    assert rows["minilm-cpu"]["active"] is None


def test_preset_show_fills_defaults(env):
    result = sagellm(env, "preset", "show", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    assert "name: minilm-cpu" in result.stdout
    assert "runtime: embedding" in result.stdout
    assert "restart: always" in result.stdout
    shown = json.loads(sagellm(env, "preset", "show", "minilm-cpu", "--json").stdout)
    assert shown["engines"][0]["startup_timeout_s"] == 180.0


def test_preset_show_unknown_is_bad_input(env):
    result = sagellm(env, "preset", "show", "nope")
    assert result.returncode == 2
    assert "minilm-cpu" in result.stderr


def test_validate_good_file(env, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_PRESET)
    result = sagellm(env, "preset", "validate", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: tiny (1 engine)"


def test_validate_bad_file_names_the_field(env, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PRESET)
    result = sagellm(env, "preset", "validate", "--file", str(path))
    assert result.returncode == 2
    assert "engines[0].tensor_parallel" in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())


def test_validate_builtin_by_name(env):
    result = sagellm(env, "preset", "validate", "qwen-plus-embeddings")
    assert result.returncode == 0, result.stderr
    assert "ok: qwen-plus-embeddings (2 engines)" in result.stdout


@pytest.mark.parametrize("args", [
    ("status",),
    ("engine", "list"),
    ("preset", "set", "minilm-cpu"),
    ("events",),
])
def test_no_daemon_exits_3_and_says_how_to_start_it(env, args):
    result = sagellm(env, *args)
    assert result.returncode == 3, result.stderr
    assert "sagellmd" in result.stderr
    assert env["SAGELLM_URL"] in result.stderr


def test_url_option_overrides_environment(env, dead_url):
    env = {**env, "SAGELLM_URL": "http://127.0.0.1:1"}
    result = sagellm(env, "--url", dead_url, "status")
    assert result.returncode == 3
    assert dead_url in result.stderr


def test_set_with_bad_file_fails_before_contacting_the_daemon(env, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        env = {**env, "SAGELLM_URL": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        path = tmp_path / "bad.yaml"
        path.write_text(BAD_PRESET)
        result = sagellm(env, "preset", "set", "x", "--file", str(path))
        assert result.returncode == 2
        assert "engines[0].tensor_parallel" in result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_set_name_must_match_the_file(env, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_PRESET)
    result = sagellm(env, "preset", "set", "other", "--file", str(path))
    assert result.returncode == 2
    assert "'other'" in result.stderr and "'tiny'" in result.stderr


def test_engine_start_bad_env_is_bad_input(env):
    result = sagellm(env, "engine", "start", "m", "--env", "NOEQUALS")
    assert result.returncode == 2
    assert "--env" in result.stderr


def test_usage_error_exits_2(env):
    assert sagellm(env, "engine", "start", "m", "--kind", "gpu").returncode == 2


def test_later_commands_are_absent(env):
    for args in (["gpu"], ["history"], ["rollback"], ["model", "list"],
                 ["preset", "set", "minilm-cpu", "--dry-run"]):
        assert sagellm(env, *args).returncode == 2, args


# --- pure pieces ----------------------------------------------------------------------


def test_slug_from_model():
    assert slug("Qwen/Qwen2.5-7B-Instruct") == "qwen2-5-7b-instruct"
    assert slug("/models/My_Model/") == "my-model"
    assert len(slug("x" * 100)) == 63


def test_judge_waits_for_a_fresh_ready_of_restarted_engines():
    rollout = Rollout.from_answer("p", {"generation": 5, "plan": [
        {"action": "replace", "engine": "p.a"}, {"action": "keep", "engine": "p.b"}]})
    status = {"generation": 5, "presets": ["p"], "engines": [
        {"id": "p.a", "preset": "p", "state": "ready"},
        {"id": "p.b", "preset": "p", "state": "ready"}]}
    # p.a still shows the old instance's `ready` until the loop replaces it.
    assert not judge(rollout, status, Progress()).done
    assert judge(rollout, status, Progress(ready_seen={"p.a"})).ok


def test_judge_fails_when_the_preset_is_gone_at_a_newer_generation():
    rollout = Rollout("p", 5, frozenset())
    verdict = judge(rollout, {"generation": 6, "presets": [], "engines": []}, Progress())
    assert verdict.done and not verdict.ok and "no longer active" in verdict.reason


def test_follow_rollout_times_out():
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            now[0] += 10
            return httpx.Response(200, json={"events": [], "last_id": 3})
        return httpx.Response(200, json={"generation": 2, "engines": [
            {"id": "p.a", "preset": "p", "state": "starting", "message": "loading"}]})

    client = ApiClient("http://d", transport=httpx.MockTransport(handler))
    verdict = follow_rollout(client, Rollout("p", 2, frozenset()), 3, 25, print, lambda: now[0])
    assert verdict.done and not verdict.ok
    assert verdict.reason == "timed out after 25 s; waiting for: p.a starting (loading)"


def _response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://d/"))


def test_api_errors_map_to_exceptions():
    spec = error_from_response(_response(400, {"error": {
        "code": "invalid_spec", "message": "a; b", "details": {"errors": ["a", "b"]}}}))
    assert isinstance(spec, SpecError) and spec.errors == ["a", "b"] and spec.exit_code == 2
    assert isinstance(error_from_response(_response(404, {"error": {"code": "not_found",
                      "message": "no"}})), NotFoundError)
    conflict = error_from_response(_response(409, {"error": {"message": "use preset unset"}}))
    assert isinstance(conflict, ConflictError) and conflict.message == "use preset unset"
    assert isinstance(error_from_response(_response(401, {})), UnauthorizedError)
    assert error_from_response(_response(500, {})).exit_code == 1


def test_token_is_sent_only_on_changes():
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.headers.get("authorization")))
        return httpx.Response(200, json={})

    client = ApiClient("http://d", "s3cret", transport=httpx.MockTransport(handler))
    client.get("/v1/status")
    client.put("/v1/presets/x")
    assert seen == [("GET", None), ("PUT", "Bearer s3cret")]


# --- commands against a stand-in daemon (httpx.MockTransport) ------------------------


class FakeDaemon:
    """Just enough of the API for set --wait and apply: one preset `tiny` with one engine."""

    def __init__(self, outcome: str, previous: dict[str, Any] | None = None) -> None:
        self.outcome = outcome  # "ready" or "failed"
        self.previous = previous
        self.active = previous is not None
        self.generation = 1
        self.state: str | None = "ready" if self.active else None
        self.events: list[dict[str, Any]] = [{"id": 1, "type": "daemon", "engine": None}]
        self.calls: list[tuple[str, str, Any]] = []

    def _event(self, kind: str, message: str = "") -> None:
        self.events.append({"id": len(self.events) + 1, "ts": "t", "engine": "tiny.embed",
                            "type": kind, "message": message, "generation": self.generation})

    def _advance(self) -> None:
        if self.state == "pending":
            self.state = "starting"
            self._event("starting")
        elif self.state == "starting":
            self.state = self.outcome
            self._event(self.outcome, "exit code 1" if self.outcome == "failed" else "")

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path, method = request.url.path, request.method
        self.calls.append((method, path, body))
        if path == "/v1/events":
            params = request.url.params
            if "wait" in params:
                self._advance()
            after = int(params.get("after", 0))
            events = [e for e in self.events if e["id"] > after]
            if "limit" in params:
                events = events[-int(params["limit"]):]
            return httpx.Response(200, json={"events": events, "last_id": self.events[-1]["id"]})
        if path == "/v1/status":
            engines = [{"id": "tiny.embed", "preset": "tiny", "state": self.state,
                        "message": self.state}] if self.active else []
            return httpx.Response(200, json={"generation": self.generation, "engines": engines,
                                             "presets": ["tiny"] if self.active else []})
        if path == "/v1/presets/tiny" and method == "GET":
            if not self.active:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
            return httpx.Response(200, json={"name": "tiny", "active": True,
                                             "document": self.previous})
        if path == "/v1/presets/tiny" and method in ("PUT", "DELETE"):
            self.generation += 1
            self.active = method == "PUT"
            self.state = "pending" if self.active else None
            action = "replace" if method == "PUT" else "stop"
            return httpx.Response(200, json={"generation": self.generation, "preset": "tiny",
                                             "plan": [{"action": action, "engine": "tiny.embed"}]})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


def run_with(daemon: FakeDaemon, *args: str) -> Any:
    obj = CliContext(url="http://fake", transport=httpx.MockTransport(daemon.handler))
    return CliRunner().invoke(app, list(args), obj=obj)


def test_status_table_shows_user_text_verbatim():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "generation": 7, "daemon": {"pid": 123}, "presets": ["p"],
            "gpus": {"mode": "none", "message": "no GPUs (gpus: none)", "devices": []},
            "engines": [{"id": "p.a", "kind": "llm", "model": "m", "state": "backoff",
                         "pid": None, "port": 20001, "restarts": 2, "label": "[bold]x[/bold]",
                         "message": "exit 1"}]})

    obj = CliContext(url="http://fake", transport=httpx.MockTransport(handler))
    result = CliRunner().invoke(app, ["status"], obj=obj, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "generation 7   daemon pid 123" in result.output
    assert "gpus: no GPUs (gpus: none)" in result.output
    assert "[bold]x[/bold]" in result.output and "backoff" in result.output


def test_set_wait_follows_events_until_ready(tmp_path):
    daemon = FakeDaemon("ready")
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD_PRESET)
    result = run_with(daemon, "preset", "set", "tiny", "--file", str(path), "--wait")
    assert result.exit_code == 0, result.output
    assert "generation 2" in result.output
    assert "tiny.embed  starting" in result.output
    assert "ready: all 1 engine(s) of tiny are ready" in result.output
    put = next(call for call in daemon.calls if call[0] == "PUT")
    assert put[2]["name"] == "tiny" and "runtime" not in put[2]["engines"][0]


def test_apply_failure_unsets_a_preset_that_was_not_active():
    daemon = FakeDaemon("failed")
    result = run_with(daemon, "preset", "apply", "tiny")
    assert isinstance(result.exception, SagellmError) and result.exception.exit_code == 1
    assert "engine tiny.embed failed: exit code 1" in result.exception.message
    assert "undone: unset preset tiny" in result.output
    assert [c[0] for c in daemon.calls if c[1] == "/v1/presets/tiny"] == ["GET", "PUT", "DELETE"]


def test_apply_failure_restores_the_previous_document():
    previous = {"version": 1, "name": "tiny", "engines": [{"name": "embed", "model": "old"}]}
    daemon = FakeDaemon("failed", previous=previous)
    result = run_with(daemon, "preset", "apply", "tiny")
    assert isinstance(result.exception, SagellmError)
    assert "set preset tiny back to its previous document" in result.output
    puts = [c for c in daemon.calls if c[:2] == ("PUT", "/v1/presets/tiny")]
    assert [put[2] for put in puts] == [None, previous]


def test_apply_no_rollback_leaves_it_set():
    daemon = FakeDaemon("failed")
    result = run_with(daemon, "preset", "apply", "tiny", "--no-rollback")
    assert isinstance(result.exception, SagellmError)
    assert "left as set" in result.exception.message
    assert ("DELETE", "/v1/presets/tiny", None) not in daemon.calls
