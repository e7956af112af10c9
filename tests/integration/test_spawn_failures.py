"""An engine that cannot be spawned, or dies saying nothing, is reported and retried."""

from __future__ import annotations

import sys
from typing import Any

from tests.integration.conftest import Daemon

GHOST = {"command": ["/nonexistent/sagellm-ghost-engine", "--port", "{port}"]}
# A NUL in argv makes Popen raise ValueError ("embedded null byte"), not OSError.
NUL_ARG = {"command": [sys.executable, "-c", "pass\0", "{port}"]}
SILENT = {"command": [sys.executable, "-c", "import sys; sys.exit(3)", "{port}"]}


def cannot_start(daemon: Daemon, engine: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events(engine) if "cannot start" in e["message"]]


def test_a_missing_command_backs_off_with_events_and_is_retried(make_daemon) -> None:
    daemon = make_daemon(runtimes={"ghost": GHOST})
    response = daemon.put(
        "/v1/engines/g?rollback=false", {"model": "m", "use_gpu": False, "runtime": "ghost"}
    )
    assert response.status_code == 201, response.text
    daemon.wait_for(lambda: len(cannot_start(daemon, "g")) >= 3, 15, "three spawn attempts")
    entry = daemon.engine("g")
    assert entry["state"] in ("backoff", "starting")
    assert entry["pid"] is None
    assert "/nonexistent/sagellm-ghost-engine" in entry["message"] or entry["state"] == "starting"
    backoffs = [e for e in daemon.events("g") if e["type"] == "backoff"]
    assert backoffs, daemon.events("g")
    assert any("next start in" in e["message"] for e in backoffs)


def test_a_spawn_value_error_backs_off_instead_of_stalling_in_starting(make_daemon) -> None:
    daemon = make_daemon(runtimes={"nul": NUL_ARG})
    daemon.put("/v1/engines/n?rollback=false", {"model": "m", "use_gpu": False, "runtime": "nul"})
    daemon.wait_for(lambda: len(cannot_start(daemon, "n")) >= 2, 15, "two spawn attempts")
    assert any("null byte" in e["message"] for e in cannot_start(daemon, "n"))
    assert any(e["type"] == "backoff" for e in daemon.events("n"))


def test_a_spawn_error_with_restart_never_fails_with_an_event(make_daemon) -> None:
    daemon = make_daemon(runtimes={"nul": NUL_ARG})
    daemon.put(
        "/v1/engines/n?rollback=false",
        {"model": "m", "use_gpu": False, "runtime": "nul", "restart": "never"},
    )
    entry = daemon.wait_state("n", "failed", timeout=10)
    assert "cannot start" in entry["message"] and entry["pid"] is None
    failed = [e for e in daemon.events("n") if e["type"] == "failed"]
    assert failed and "null byte" in failed[-1]["message"]


def test_a_crash_without_output_does_not_quote_the_daemon_header(make_daemon) -> None:
    daemon = make_daemon(runtimes={"silent": SILENT})
    daemon.put(
        "/v1/engines/s?rollback=false",
        {"model": "m", "use_gpu": False, "runtime": "silent", "restart": "never"},
    )
    entry = daemon.wait_state("s", "failed", timeout=10)
    assert "exit code 3" in entry["message"]
    assert "=== sagellm" not in entry["message"]
    assert not any("=== sagellm" in e["message"] for e in daemon.events("s"))
