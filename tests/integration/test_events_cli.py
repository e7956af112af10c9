"""`sagellm events` against a real sagellmd: `--limit N` shows the last N events, and
`events -f` outlives a daemon restart (same database) and a new database behind the URL."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.integration.conftest import Daemon
from tests.integration.terminal import CLI, PipeReader, event_lines, wait_until


def test_events_limit_shows_the_last_n_events(daemon: Daemon):
    daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
    daemon.wait_state("x", "ready")
    daemon.put("/v1/engines/y", {"model": "fake/y-1B"})
    daemon.wait_state("y", "ready")
    # Settled, so no rollout event lands between this read and the CLI's.
    daemon.wait_for(
        lambda: daemon.get("/v1/generations/2").json()["healthy"] is True, 20, "generation 2"
    )
    recorded = daemon.events()
    assert len(recorded) > 4, recorded

    plain = daemon.cli("events", "--limit", "3")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 3, plain.stdout
    # The newest three, oldest first: each line starts with its event's time and engine.
    for line, event in zip(lines, recorded[-3:], strict=True):
        assert line.split()[:3] == [event["ts"], event["engine"] or "-", event["type"]], line

    as_json = daemon.cli("events", "--json", "-n", "2")
    assert as_json.returncode == 0, as_json.stderr
    assert [e["id"] for e in json.loads(as_json.stdout)["events"]] == [
        e["id"] for e in recorded[-2:]
    ]
    after = daemon.cli("events", "--after", str(recorded[0]["id"]), "--limit", "2", "--json")
    assert [e["id"] for e in json.loads(after.stdout)["events"]] == [e["id"] for e in recorded[1:3]]
    refused = daemon.cli("events", "--limit", "0")
    assert refused.returncode == 2 and "--limit" in refused.stderr, refused.stderr


def restart_on(url_of: Daemon, replacement: Daemon) -> None:
    """Start `replacement` on the address of `url_of` (already stopped)."""
    replacement.port, replacement.url = url_of.port, url_of.url
    replacement.client.close()
    replacement.client = httpx.Client(base_url=replacement.url, timeout=30)
    replacement.start()


def follow_through_a_restart(
    daemon: Daemon, restart: Callable[[], Daemon]
) -> tuple[PipeReader, Daemon]:
    """`events -f` on `daemon`, stopped and replaced by `restart()`; returns once the
    follower printed the replacement's start of engine `y`."""
    daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
    daemon.wait_state("x", "ready")
    follow = PipeReader([*CLI, "events", "-f"], daemon.env)
    wait_until(lambda: event_lines(follow.lines, "x", "ready"), 15, "x ready", follow.dump)
    daemon.stop()
    wait_until(
        lambda: any(f"reconnecting to {daemon.url}..." in ln for ln in follow.err_lines),
        15,
        "the follower to notice",
        follow.dump,
    )
    assert follow.process.poll() is None, follow.dump()
    shown = len(follow.lines)
    back = restart()
    wait_until(
        lambda: any(f"reconnected to {daemon.url}" in ln for ln in follow.err_lines),
        15,
        "the follower to reconnect",
        follow.dump,
    )
    assert back.put("/v1/engines/y", {"model": "fake/y-1B"}).status_code in (200, 201)
    back.wait_state("y", "ready")
    wait_until(lambda: event_lines(follow.lines[shown:], "y", "ready"), 15, "y ready", follow.dump)
    return follow, back


def test_events_follow_reconnects_after_a_daemon_restart(daemon: Daemon):
    def same_home() -> Daemon:
        daemon.start()
        return daemon

    follow, _ = follow_through_a_restart(daemon, same_home)
    try:
        # Same database: the numbering goes on, and nothing is printed twice.
        assert len(follow.lines) == len(set(follow.lines)), follow.dump()
        assert len(event_lines(follow.lines, "x", "ready")) == 1, follow.dump()
        code, err = follow.interrupt()
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        follow.close()


def test_events_follow_starts_over_on_a_new_event_log(make_daemon: Callable[..., Daemon]):
    first = make_daemon()
    # Enough events that the new daemon's own stay below the follower's cursor.
    for name in ("a", "b", "c"):
        first.put(f"/v1/engines/{name}", {"model": "fake/x-1B"})
    for name in ("a", "b", "c"):
        first.wait_state(name, "ready")
    replacement = make_daemon(start=False)
    follow, _ = follow_through_a_restart(
        first, lambda: restart_on(first, replacement) or replacement
    )
    try:
        assert any("has a new event log" in line for line in follow.err_lines), follow.dump()
        code, err = follow.interrupt()
        assert code == 0, err
    finally:
        follow.close()
