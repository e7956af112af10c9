"""The CLI's interactive side against a real sagellmd: `status --watch` in a real
pseudo-terminal while an engine crashes and the daemon restarts, its plain and JSON forms
on a pipe, `events -f`, and shell completion of the installed `sagellm` script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sagellmd.cli.watch import PlainWatchView, Snapshot, duration_text, parse_ts, transient
from sagellmd.errors import DaemonUnreachableError, NotFoundError, SagellmError, UnauthorizedError
from tests.integration.conftest import Daemon, fake_preset
from tests.integration.terminal import CLI, PipeReader, PtyProcess, event_lines, wait_until

# The stand-in engine answers 503 this long after each start, so `starting` is on screen
# long enough to be captured whatever the scheduling.
SLOW_START = {"FAKE_VLLM_STARTUP_DELAY": "1.5"}


def engine_frames(text: str, engine_id: str) -> list[tuple[str, str]]:
    """(state, pid) of every row of `engine_id` drawn, oldest first."""
    frames = []
    for line in text.splitlines():
        fields = line.split()
        # ENGINE KIND MODEL STATE PID ...: single-word cells, so split() finds columns.
        if len(fields) >= 5 and fields[0] == engine_id:
            frames.append((fields[3], fields[4]))
    return frames


def test_status_watch_in_a_pty_follows_a_crash_and_a_daemon_restart(daemon: Daemon):
    answer = daemon.put("/v1/presets/p", fake_preset("p", {"name": "a", "env": SLOW_START}))
    assert answer.status_code in (200, 201), answer.text
    old_pid = daemon.wait_state("p.a", "ready")["pid"]
    env = {**daemon.env, "COLUMNS": "220", "LINES": "40", "TERM": "xterm-256color"}
    watch = PtyProcess([*CLI, "status", "--watch"], env)
    try:
        dump = watch.text
        wait_until(
            lambda: ("ready", str(old_pid)) in engine_frames(watch.text(), "p.a"),
            20,
            "the first frame",
            dump,
        )
        first = watch.text()
        for header in ("ENGINE", "KIND", "MODEL", "STATE", "PID", "PORT", "GPUS", "MEMORY"):
            assert header in first
        for header in ("RESTARTS", "UPTIME", "LAST EVENT"):
            assert header in first
        assert "generation 1" in first
        assert "\x1b[1A" in watch.raw()  # redrawn in place (cursor up), not scrolled
        row = next(line for line in first.splitlines() if line.split()[:1] == ["p.a"])
        assert row.split()[1:3] == ["llm", "fake/model-1B"]
        assert " GiB " in row  # the engine's GPU reservation

        # A crash: the daemon restarts the engine; the view follows it back to ready.
        shown = len(engine_frames(watch.text(), "p.a"))
        os.kill(old_pid, signal.SIGKILL)
        new = daemon.wait_for(
            lambda: (e := daemon.engine("p.a"))["state"] == "ready" and e["pid"] != old_pid and e,
            30,
            "p.a back after the crash",
        )
        new_pid = str(new["pid"])
        wait_until(
            lambda: ("ready", new_pid) in engine_frames(watch.text(), "p.a")[shown:],
            15,
            f"ready with the new pid {new_pid}",
            dump,
        )
        after_crash = engine_frames(watch.text(), "p.a")[shown:]
        back = after_crash.index(("ready", new_pid))
        passing = {state for state, _ in after_crash[:back]}
        assert passing & {"backoff", "starting"}, after_crash
        assert ("starting", new_pid) in after_crash[:back], after_crash
        assert all(pid != str(old_pid) for _, pid in after_crash[back:]), after_crash
        last_row = [ln for ln in watch.text().splitlines() if ln.split()[:1] == ["p.a"]][-1]
        # ... PORT GPUS MEMORY ("6.9 GiB", two words) RESTARTS: the crash is counted.
        assert last_row.split()[9] == "1", last_row

        # The daemon goes away: the view says so, and resumes once it is back.
        old_daemon = daemon.process.pid if daemon.process else None
        daemon.stop()
        wait_until(
            lambda: f"reconnecting to {daemon.url}..." in watch.text(), 15, "reconnecting", dump
        )
        assert watch.process.poll() is None
        mark = len(watch.text())
        daemon.start()
        assert daemon.process is not None and daemon.process.pid != old_daemon
        wait_until(
            lambda: (
                f"daemon pid {daemon.process.pid}" in watch.text()[mark:]
                and ("ready", new_pid) in engine_frames(watch.text()[mark:], "p.a")
            ),
            20,
            "the view to resume",
            dump,
        )
        # The daemon left the engine running (stop_engines_on_exit: false) and adopted it.
        assert daemon.engine("p.a")["pid"] == int(new_pid)

        # A real ^C on the terminal: SIGINT through the line discipline; a normal exit.
        watch.type(b"\x03")
        assert watch.process.wait(10) == 0, dump()
    finally:
        watch.close()


def test_events_follow_prints_a_restart_and_ends_on_sigint(daemon: Daemon):
    daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
    old_pid = daemon.wait_state("x", "ready")["pid"]
    follow = PipeReader([*CLI, "events", "-f"], daemon.env)
    try:
        # The latest events first: x's start is among them.
        wait_until(lambda: event_lines(follow.lines, "x", "ready"), 15, "history", follow.dump)
        shown = len(follow.lines)
        result = daemon.cli("engine", "restart", "x")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(
            lambda: (
                event_lines(follow.lines[shown:], "x", "restarting")
                and event_lines(follow.lines[shown:], "x", "started")
                and event_lines(follow.lines[shown:], "x", "ready")
            ),
            20,
            "restarting, started and ready of x",
            follow.dump,
        )
        new_pid = daemon.engine("x")["pid"]
        assert new_pid != old_pid
        started = event_lines(follow.lines[shown:], "x", "started")
        assert any(f"pid {new_pid}" in line for line in started), started
        code, err = follow.interrupt()
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        follow.close()


def test_status_watch_on_a_pipe_prints_a_line_per_change(daemon: Daemon):
    watch = PipeReader([*CLI, "status", "--watch"], {**daemon.env, "COLUMNS": "200"})
    try:
        wait_until(
            lambda: any(f"watching {daemon.url}: generation 0" in ln for ln in watch.lines),
            15,
            "the header",
            watch.dump,
        )
        daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
        pid = daemon.wait_state("x", "ready")["pid"]
        wait_until(
            lambda: any(f"x  llm  fake/x-1B  ready  pid {pid}  " in ln for ln in watch.lines),
            15,
            "x ready",
            watch.dump,
        )
        assert any("generation 1 (was 0)" in line for line in watch.lines), watch.dump()
        ready = next(line for line in watch.lines if "  ready  pid" in line)
        assert "  restarts 0  " in ready and "  last: " in ready and "ready" in ready
        # Idle: the uptime changes, nothing else; no new lines (not a timer).
        count = len(watch.lines)
        time.sleep(6)
        assert len(watch.lines) == count, watch.dump()
        code, err = watch.interrupt()
        assert code == 0, err
    finally:
        watch.close()


def test_status_watch_json_prints_one_status_per_line(daemon: Daemon):
    watch = PipeReader([*CLI, "status", "--watch", "--json"], daemon.env)
    try:
        wait_until(lambda: watch.lines, 15, "the first status", watch.dump)
        daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
        daemon.wait_state("x", "ready")

        def ready_line() -> bool:
            documents = [json.loads(line) for line in watch.lines]
            return any(
                [(e["id"], e["state"]) for e in d["engines"]] == [("x", "ready")] for d in documents
            )

        wait_until(ready_line, 15, "a status with x ready", watch.dump)
        documents = [json.loads(line) for line in watch.lines]  # every line is JSON
        assert documents[0]["generation"] == 0 and documents[0]["engines"] == []
        assert documents[-1]["generation"] == 1
        # One line per change: no two consecutive lines are the same status.
        assert all(a != b for a, b in zip(documents, documents[1:], strict=False))
        code, err = watch.interrupt()
        assert code == 0, err
    finally:
        watch.close()


# The long-running commands, and a line each prints once it is following the daemon.
FOLLOWERS = {
    "status --watch": "watching http",
    "status --watch --json": '"generation"',
    "events -f": "x  ready",
}


@pytest.mark.parametrize("command", sorted(FOLLOWERS))
def test_sigint_ends_a_follower_started_with_sigint_ignored(daemon: Daemon, command: str):
    # A background job of a non-interactive shell (`sagellm events -f &` in a script)
    # starts with SIGINT ignored; the CLI must still end on Ctrl-C / `kill -INT`.
    daemon.put("/v1/engines/x", {"model": "fake/x-1B"})
    daemon.wait_state("x", "ready")
    follower = PipeReader([*CLI, *command.split()], daemon.env, sigint_ignored=True)
    try:
        wait_until(
            lambda: any(FOLLOWERS[command] in line for line in follower.lines),
            15,
            "the first output",
            follower.dump,
        )
        time.sleep(0.3)  # well inside its long-poll
        code, err = follower.interrupt(timeout=5)
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        follower.close()


def test_sigint_ends_a_change_wait_started_with_sigint_ignored(daemon: Daemon, tmp_path: Path):
    # Any waiting command, not only the followers: `--wait` on an engine that never gets
    # healthy, interrupted, stops waiting at once (the change stays) with no traceback.
    sick = fake_preset("p", {"name": "x", "env": {"FAKE_VLLM_HEALTH": "fail"}})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(sick))
    command = [*CLI, "preset", "set", "p", "--file", str(path), "--wait"]
    waiting = PipeReader(command, daemon.env, sigint_ignored=True)
    try:
        wait_until(
            lambda: any("waiting up to" in line for line in waiting.lines),
            15,
            "the wait",
            waiting.dump,
        )
        time.sleep(0.3)
        code, err = waiting.interrupt(timeout=5)
        assert code == 1, err
        assert "stopped waiting; generation 1 goes on" in err and "Traceback" not in err
    finally:
        waiting.close()


def test_ctrl_c_on_a_terminal_ends_status_watch_started_with_sigint_ignored(daemon: Daemon):
    watch = PtyProcess([*CLI, "status", "--watch"], daemon.env, sigint_ignored=True)
    try:
        wait_until(lambda: "redrawn on every event" in watch.text(), 15, "a frame", watch.text)
        watch.type(b"\x03")
        assert watch.process.wait(5) == 0, watch.text()
    finally:
        watch.close()


def test_show_completion_prints_a_bash_script_that_completes_commands():
    sagellm = str(Path(sys.executable).with_name("sagellm"))
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run(
        [sagellm, "--show-completion", "bash"], env=env, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert "_sagellm_completion()" in shown.stdout
    assert "complete -o default -F _sagellm_completion sagellm" in shown.stdout
    # What that script runs on TAB: the program itself in completion mode.
    complete = {**os.environ, "_SAGELLM_COMPLETE": "complete_bash"}
    words = subprocess.run(
        [sagellm],
        env={**complete, "COMP_WORDS": "sagellm sta", "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert words.stdout.split() == ["status"], words.stdout + words.stderr
    options = subprocess.run(
        [sagellm],
        env={**complete, "COMP_WORDS": "sagellm status --w", "COMP_CWORD": "2"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert options.stdout.split() == ["--watch"], options.stdout + options.stderr


# --- the pure pieces the views are made of (no daemon) ----------------------------------


def test_plain_view_prints_a_line_per_change_and_one_per_outage():
    lines: list[str] = []
    view = PlainWatchView("http://d", lines.append, clock=lambda: 0.0)
    entry = {"id": "p.a", "kind": "llm", "model": "m", "state": "starting", "pid": 7,
             "port": 9, "gpus": [0], "gpu_memory_gb": 1.0, "restarts": 0}  # fmt: skip
    event = {"id": 3, "ts": "1970-01-01T00:00:00.000000Z", "engine": "p.a", "type": "started"}
    view.show(Snapshot({"generation": 1, "daemon": {"pid": 5}, "engines": [entry]}, 3))
    view.tick()
    view.show(Snapshot({"generation": 1, "engines": [entry]}, 3))  # nothing changed
    ready = {**entry, "state": "ready"}
    view.show(Snapshot({"generation": 2, "engines": [ready]}, 4, {"p.a": event}))
    view.reconnecting("refused")
    view.reconnecting("refused")
    view.show(Snapshot({"generation": 2, "daemon": {"pid": 6}, "engines": []}, 1))
    texts = [line.split("  ", 1)[1] for line in lines]
    assert texts[0] == "watching http://d: generation 1, daemon pid 5, 1 engine(s)"
    assert texts[1].startswith("p.a  llm  m  starting  pid 7  port 9  gpus 0  1.0 GiB  restarts 0")
    assert texts[2] == "generation 2 (was 1)"
    assert texts[3].startswith("p.a  llm  m  ready  pid 7") and "last: " in texts[3]
    assert texts[3].endswith(" started")
    assert texts[4] == "reconnecting to http://d... (refused)"
    assert texts[5] == "reconnected to http://d: generation 2, daemon pid 6, 0 engine(s)"
    assert texts[6] == "p.a  removed"
    assert len(texts) == 7


def test_uptime_and_which_errors_a_watch_waits_out():
    assert [duration_text(s) for s in (None, 5, 65, 3 * 3600 + 60, 2 * 86400 + 7200)] == [
        "-", "5s", "1m05s", "3h01m", "2d02h"
    ]  # fmt: skip
    assert parse_ts("1970-01-01T00:01:00.500000Z") == 60.5
    assert transient(DaemonUnreachableError("down"))
    assert transient(SagellmError("the daemon failed: Internal Server Error (HTTP 500)"))
    assert not transient(UnauthorizedError("wrong token"))
    assert not transient(NotFoundError("no such thing"))
