"""Owns the tests of sagellmd/runtime/process.py: real processes, real signals, real pidfds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sagellmd.runtime.logs import DAEMON_HEADER
from sagellmd.runtime.process import (
    ENGINE_MARKER,
    HOME_MARKER,
    RUN_MARKER,
    Markers,
    ProcessWatcher,
    identity_matches,
    new_run_marker,
    process_create_time,
    signal_group,
    spawn,
)

# A child that ignores SIGTERM and forks a worker into its own process group, then
# prints both pids; only SIGKILL to the group ends it.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = os.fork()
if worker == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
    os._exit(0)
print("pids", os.getpid(), worker, flush=True)
time.sleep(60)
"""


class Exits:
    """Collects the watcher's exit callbacks, and lets a test wait for one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.seen: list[tuple[str, int, int | None, int | None]] = []

    def __call__(self, engine_id: str, pid: int, code: int | None, signum: int | None) -> None:
        self.seen.append((engine_id, pid, code, signum))

    def wait(self, count: int = 1, timeout_s: float = 10.0) -> None:
        async def until_seen() -> None:
            while len(self.seen) < count:
                await asyncio.sleep(0.01)

        self.loop.run_until_complete(asyncio.wait_for(until_seen(), timeout_s))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of process groups a test started; every one is killed at teardown."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


def env_of(tmp_path: Path, engine_id: str = "chat") -> dict[str, str]:
    return {
        **os.environ,
        ENGINE_MARKER: engine_id,
        HOME_MARKER: str(tmp_path),
        RUN_MARKER: new_run_marker(),
    }


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for_line(path: Path, prefix: str, timeout_s: float = 10.0) -> str:
    """The first line the child printed that starts with `prefix`, without it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix)
        time.sleep(0.02)
    raise AssertionError(f"{path} got no line: {path.read_text()!r}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_exec(pid: int, marker: str = "time.sleep(60)") -> None:
    """Until the child has exec'd, /proc shows the forked parent's environment, not its own."""
    deadline = time.monotonic() + 10.0
    while marker not in " ".join(psutil.Process(pid).cmdline()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_spawn_starts_its_own_session_and_appends_to_the_log(tmp_path: Path, started) -> None:
    log_file = tmp_path / "logs" / "chat.log"
    log_file.parent.mkdir()
    log_file.write_text("earlier run\n")
    popen = spawn(
        python("import os; print(os.getsid(0), os.getpgid(0))"), env_of(tmp_path), log_file
    )
    started.append(popen.pid)
    assert popen.wait(10) == 0
    lines = log_file.read_text().splitlines()
    assert lines[0] == "earlier run"
    assert lines[1].startswith(f"{DAEMON_HEADER} ") and sys.executable in lines[1]
    # Session and group leader: a stop by group reaches every worker it forks.
    assert lines[2] == f"{popen.pid} {popen.pid}"
    assert log_file.stat().st_mode & 0o777 == 0o600


def test_a_child_exit_is_reported_through_its_pidfd(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    popen = spawn(python("import sys; sys.exit(3)"), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    process = watcher.watch_child("chat", popen)
    assert process.create_time == pytest.approx(psutil.Process(popen.pid).create_time())
    exits.wait()
    assert exits.seen == [("chat", popen.pid, 3, None)]
    assert "chat" not in watcher


def test_stop_sends_sigterm_first(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    popen = spawn(
        python("import time; print('up', flush=True); time.sleep(60)"),
        env_of(tmp_path),
        tmp_path / "a.log",
    )
    started.append(popen.pid)
    watcher.watch_child("chat", popen)
    wait_for_line(tmp_path / "a.log", "up")
    began = time.monotonic()
    watcher.stop("chat", grace_s=30.0)
    assert watcher.is_stopping("chat")
    exits.wait()
    assert exits.seen == [("chat", popen.pid, None, signal.SIGTERM)]
    assert time.monotonic() - began < 5.0  # not the 30 s grace


def test_stop_kills_the_whole_group_after_the_grace(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    popen = spawn(python(STUBBORN), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    watcher.watch_child("chat", popen)
    leader, worker = map(int, wait_for_line(tmp_path / "a.log", "pids ").split())
    assert (leader, os.getpgid(worker)) == (popen.pid, popen.pid)
    began = time.monotonic()
    watcher.stop("chat", grace_s=0.5)
    exits.wait()
    took = time.monotonic() - began
    assert exits.seen == [("chat", popen.pid, None, signal.SIGKILL)]
    assert 0.4 <= took < 5.0
    deadline = time.monotonic() + 5.0
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(worker), "the worker outlived its engine"


def test_an_exit_kills_workers_left_in_the_group(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    # The leader exits on its own once it has printed; its worker stays behind.
    code = STUBBORN.rsplit("time.sleep(60)", 1)[0] + "time.sleep(0.3)\nos._exit(7)\n"
    popen = spawn(python(code), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    watcher.watch_child("chat", popen)
    _, worker = map(int, wait_for_line(tmp_path / "a.log", "pids ").split())
    exits.wait()
    assert exits.seen == [("chat", popen.pid, 7, None)]
    deadline = time.monotonic() + 5.0
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(worker)


def test_adopt_watches_a_process_it_did_not_start(tmp_path: Path, loop, started) -> None:
    env = env_of(tmp_path)
    popen = spawn(python("import time; time.sleep(60)"), env, tmp_path / "a.log")
    started.append(popen.pid)
    wait_exec(popen.pid)
    create_time = process_create_time(popen.pid)
    assert create_time is not None
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    # Another create time is another process that got the same pid: not adopted.
    assert watcher.adopt("chat", popen.pid, create_time - 10) is None
    # Another engine's marker: not adopted either.
    assert watcher.adopt("other", popen.pid, create_time) is None
    adopted = watcher.adopt("chat", popen.pid, create_time)
    assert adopted is not None and adopted.popen is None
    assert adopted.markers == Markers.of(env)
    watcher.kill("chat")
    exits.wait()
    # Not our child: the exit status belongs to whoever is its parent.
    assert exits.seen == [("chat", popen.pid, None, None)]
    popen.wait(5)


def test_adopt_of_a_dead_pid_is_none(tmp_path: Path, loop) -> None:
    popen = spawn(python("pass"), env_of(tmp_path), tmp_path / "a.log")
    popen.wait(10)
    watcher = ProcessWatcher(loop, Exits(loop))
    assert watcher.adopt("chat", popen.pid, time.time()) is None


def test_identity_is_pid_and_create_time(tmp_path: Path, started) -> None:
    popen = spawn(python("import time; time.sleep(60)"), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    wait_exec(popen.pid)
    create_time = process_create_time(popen.pid)
    assert create_time is not None
    assert identity_matches(popen.pid, create_time)
    assert identity_matches(popen.pid, create_time, "chat")
    assert not identity_matches(popen.pid, create_time, "other")
    assert not identity_matches(popen.pid, create_time + 1.0)
    popen.kill()
    # A zombie is not the engine any more, though its pid and create time still match.
    deadline = time.monotonic() + 5.0
    while psutil.Process(popen.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not identity_matches(popen.pid, create_time)
    popen.wait(5)
    assert not identity_matches(popen.pid, create_time)
    assert process_create_time(popen.pid) is None


def test_rekey_keeps_watching_under_the_new_key(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    popen = spawn(python("import time; time.sleep(0.3)"), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    watcher.watch_child("chat", popen)
    watcher.rekey("chat", "chat#retiring")
    assert watcher.engine_ids() == ["chat#retiring"]
    exits.wait()
    assert exits.seen == [("chat#retiring", popen.pid, 0, None)]


def test_release_all_leaves_the_processes_running(tmp_path: Path, loop, started) -> None:
    exits = Exits(loop)
    watcher = ProcessWatcher(loop, exits)
    popen = spawn(python("import time; time.sleep(60)"), env_of(tmp_path), tmp_path / "a.log")
    started.append(popen.pid)
    watcher.watch_child("chat", popen)
    watcher.release_all()
    assert watcher.engine_ids() == []
    time.sleep(0.1)
    assert popen.poll() is None
    assert exits.seen == []


def test_signal_group_of_no_group_is_false(tmp_path: Path) -> None:
    popen = spawn(python("pass"), env_of(tmp_path), tmp_path / "a.log")
    popen.wait(10)
    assert signal_group(popen.pid, signal.SIGTERM) is False


def test_markers_need_engine_and_home() -> None:
    assert Markers.of({}) is None
    assert Markers.of({ENGINE_MARKER: "chat"}) is None
    assert Markers.of({ENGINE_MARKER: "chat", HOME_MARKER: "/h"}) == Markers("chat", "/h", None)
    full = {ENGINE_MARKER: "chat", HOME_MARKER: "/h", RUN_MARKER: "r1"}
    assert Markers.of(full) == Markers("chat", "/h", "r1")
