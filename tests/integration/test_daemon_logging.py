"""The daemon's own log: library chatter only at `--log-level debug`."""

from __future__ import annotations

from tests.integration.conftest import Daemon

CHATTY = ("apscheduler", "alembic", "httpx", "httpcore", "huggingface_hub", "uvicorn.access")


def library_lines(daemon: Daemon) -> list[str]:
    return [
        line for line in daemon.log().splitlines() if any(f" {name}" in line for name in CHATTY)
    ]


def test_libraries_log_warnings_only_at_info_level(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.extra_env["SAGELLM_LOG_LEVEL"] = "info"
    daemon.start()
    daemon.put("/v1/engines/quiet", {"model": "fake/quiet-1B"})
    daemon.wait_state("quiet", "ready")
    assert "sagellmd" in daemon.log()  # our own INFO lines are there
    assert "event=ready" in daemon.log()
    assert library_lines(daemon) == []


def test_debug_level_keeps_the_library_lines(make_daemon) -> None:
    daemon = make_daemon()  # the fixture runs the daemon with SAGELLM_LOG_LEVEL=debug
    daemon.put("/v1/engines/loud", {"model": "fake/loud-1B"})
    daemon.wait_state("loud", "ready")
    assert any("apscheduler" in line for line in library_lines(daemon))
    assert any("alembic" in line for line in library_lines(daemon))
