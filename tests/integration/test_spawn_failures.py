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


LONG_WORDS = " ".join(f"reason{i:03d}" for i in range(120))  # ~1200 characters
TALKER = {
    "command": [
        sys.executable,
        "-c",
        f"import sys; print('fatal: {LONG_WORDS}'); sys.exit(4)",
        "{port}",
    ]
}


def test_a_long_last_line_is_cut_between_words_and_kept_whole_in_details(make_daemon) -> None:
    daemon = make_daemon(runtimes={"talker": TALKER})
    daemon.put(
        "/v1/engines/t?rollback=false",
        {"model": "m", "use_gpu": False, "runtime": "talker", "restart": "never"},
    )
    entry = daemon.wait_state("t", "failed", timeout=10)
    said = entry["message"].split("it said: ", 1)[1]
    assert said.endswith("…")
    last_word = said.removesuffix("…").split()[-1]
    assert last_word.startswith("reason") and len(last_word) == len("reason000")
    failed = [
        e for e in daemon.events("t") if e["type"] == "exited" and "exit code 4" in e["message"]
    ]
    assert failed, daemon.events("t")
    assert len(failed[-1]["message"]) < 600
    assert failed[-1]["details"]["last_log_line"] == f"fatal: {LONG_WORDS}"
