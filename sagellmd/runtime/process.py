"""Engine processes: spawn in a new session, identify, stop by group, watch exits by pidfd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sagellmd.runtime.logs import DAEMON_HEADER, open_log

log = logging.getLogger(__name__)

ExitCallback = Callable[[str, int, "int | None", "int | None"], None]

# Every engine process carries these in its environment, and so does everything it starts:
# the engine, the daemon's home, and one run of the engine (one spawn). A child that left
# the engine's process group (setsid) is still found by them.
ENGINE_MARKER = "SAGELLM_ENGINE_ID"
HOME_MARKER = "SAGELLM_HOME"
RUN_MARKER = "SAGELLM_ENGINE_RUN"
# The cluster node whose agent started it (docs/multi-node.md); absent on the daemon's machine.
NODE_MARKER = "SAGELLM_NODE"


def new_run_marker() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Markers:
    """The env markers of one run of an engine; `run` is None for an older daemon's engine."""

    engine_id: str
    home: str
    run: str | None
    node: str | None = None

    @classmethod
    def of(cls, env: Mapping[str, str]) -> Markers | None:
        if not env.get(ENGINE_MARKER) or not env.get(HOME_MARKER):
            return None
        return cls(
            env[ENGINE_MARKER],
            env[HOME_MARKER],
            env.get(RUN_MARKER) or None,
            env.get(NODE_MARKER) or None,
        )


@dataclass(frozen=True)
class MarkedProcess:
    """A live process carrying a home's engine marker."""

    pid: int
    pgid: int
    engine_id: str
    run: str | None
    create_time: float


def marked_processes(home: str, node: str | None = None) -> list[MarkedProcess]:
    """Every live process carrying `home`'s engine markers and started on `node` (None: by
    the daemon itself, no node marker), oldest first. Where nodes share a machine (tests),
    another node's engines are that node's agent's to adopt or stop."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            pgid = os.getpgid(process.pid)
            markers = Markers.of(process.environ())
            create_time = process.create_time()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if markers is not None and markers.home == home and markers.node == node:
            found.append(
                MarkedProcess(process.pid, pgid, markers.engine_id, markers.run, create_time)
            )
    return sorted(found, key=lambda marked: marked.create_time)


def processes_of_run(markers: Markers | None) -> list[psutil.Process]:
    """Live processes of this run of the engine, wherever their session or group is."""
    if markers is None or markers.run is None:
        return []
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if Markers.of(process.environ()) == markers:
                found.append(process)
        except psutil.Error:
            continue
    return found


def signal_run(markers: Markers | None, signum: int) -> None:
    """Signal every process of the run: its group missed those that called setsid()."""
    for process in processes_of_run(markers):
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


@dataclass
class EngineProcess:
    """A live engine process the daemon watches; `popen` is None for an adopted one."""

    engine_id: str
    pid: int
    create_time: float
    popen: subprocess.Popen[bytes] | None
    pidfd: int
    markers: Markers | None = None
    kill_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def identity_matches(pid: int, create_time: float, engine_id: str | None = None) -> bool:
    """True if `pid` is still the process started at `create_time` (pids get reused)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.05:
            return False
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if engine_id is not None:
            return process.environ().get("SAGELLM_ENGINE_ID") == engine_id
        return True
    except psutil.Error:
        return False


def spawn(argv: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start an engine in its own session, output appended to its log file, never a pipe."""
    with os.fdopen(open_log(log_file), "ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"{DAEMON_HEADER} {stamp}: {' '.join(argv)}\n".encode())
        out.flush()
        # A new session makes the engine a process-group leader, so a stop reaches
        # every worker it forks; output goes to a file so engines outlive the daemon.
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def signal_group(pid: int, signum: int) -> bool:
    """Send a signal to the process group led by `pid`; False if it has no member left."""
    try:
        os.killpg(pid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("no permission to signal process group pgid=%s", pid)
        return False


class ProcessWatcher:
    """Watches engine processes with pidfds on the event loop: exits are events, not polls."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_exit: ExitCallback) -> None:
        self._loop = loop
        self._on_exit = on_exit
        self._processes: dict[str, EngineProcess] = {}

    def get(self, engine_id: str) -> EngineProcess | None:
        return self._processes.get(engine_id)

    def __contains__(self, engine_id: str) -> bool:
        return engine_id in self._processes

    def watch_child(
        self, engine_id: str, popen: subprocess.Popen[bytes], markers: Markers | None = None
    ) -> EngineProcess:
        create_time = process_create_time(popen.pid) or time.time()
        pidfd = os.pidfd_open(popen.pid)
        return self._add(EngineProcess(engine_id, popen.pid, create_time, popen, pidfd, markers))

    def adopt(self, engine_id: str, pid: int, create_time: float) -> EngineProcess | None:
        """Watch a process this daemon did not start (it survived a daemon restart)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        # The pidfd pins the identity: check it after opening, so a pid reused in
        # between is caught rather than watched.
        if not identity_matches(pid, create_time, engine_id):
            os.close(pidfd)
            return None
        try:
            markers = Markers.of(psutil.Process(pid).environ())
        except psutil.Error:
            markers = None
        return self._add(EngineProcess(engine_id, pid, create_time, None, pidfd, markers))

    def _add(self, process: EngineProcess) -> EngineProcess:
        self._processes[process.engine_id] = process
        self._loop.add_reader(process.pidfd, self._exited, process.engine_id)
        return process

    def _exited(self, engine_id: str) -> None:
        process = self._processes.pop(engine_id, None)
        if process is None:
            return
        self._loop.remove_reader(process.pidfd)
        if process.kill_timer is not None:
            process.kill_timer.cancel()
        # Workers the leader forked must not outlive it (they hold GPU memory and
        # ports). For our own child the zombie still holds the pgid, so this
        # cannot hit a reused pid. The run's marker finds those that left the group.
        signal_group(process.pid, signal.SIGKILL)
        signal_run(process.markers, signal.SIGKILL)
        code, signum = self._reap(process)
        os.close(process.pidfd)
        self._on_exit(engine_id, process.pid, code, signum)

    @staticmethod
    def _reap(process: EngineProcess) -> tuple[int | None, int | None]:
        if process.popen is None:
            return None, None
        returncode = process.popen.wait()
        if returncode < 0:
            return None, -returncode
        return returncode, None

    def stop(self, engine_id: str, grace_s: float) -> None:
        """SIGTERM to the group now, SIGKILL to the group if it is still there after grace."""
        process = self._processes.get(engine_id)
        if process is None:
            return
        signal_group(process.pid, signal.SIGTERM)
        signal_run(process.markers, signal.SIGTERM)
        if process.kill_timer is None:
            process.kill_timer = self._loop.call_later(grace_s, self._kill_all, process)

    @staticmethod
    def _kill_all(process: EngineProcess) -> None:
        signal_group(process.pid, signal.SIGKILL)
        signal_run(process.markers, signal.SIGKILL)

    def rekey(self, old: str, new: str) -> None:
        """Watch a process under another key (a surge: the old process retires)."""
        process = self._processes.pop(old, None)
        if process is None:
            return
        self._loop.remove_reader(process.pidfd)
        process.engine_id = new
        self._add(process)

    def is_stopping(self, engine_id: str) -> bool:
        process = self._processes.get(engine_id)
        return process is not None and process.kill_timer is not None

    def kill(self, engine_id: str) -> None:
        process = self._processes.get(engine_id)
        if process is not None:
            self._kill_all(process)

    def release_all(self) -> None:
        """Stop watching without touching the processes (the daemon is exiting)."""
        for process in self._processes.values():
            self._loop.remove_reader(process.pidfd)
            if process.kill_timer is not None:
                process.kill_timer.cancel()
            os.close(process.pidfd)
        self._processes.clear()

    def engine_ids(self) -> list[str]:
        return list(self._processes)
