"""Requests that could stall or starve the daemon: NaN long-polls, clients that go away,
and connections that never send a request."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Daemon, engine_processes


@contextmanager
def raw_connections(daemon: Daemon, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """`count` TCP connections to the daemon that each sent `payload` and read nothing."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            if payload:
                sock.sendall(payload)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, object]]:
    """Status and JSON body of the one answer on a raw connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def poll_request(after: int, wait: str) -> bytes:
    """A long-poll for events of an engine that never has any, so only `wait` ends it."""
    query = f"after={after}&wait={wait}&engine=nobody"
    return f"GET /v1/events?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def events_answered(daemon: Daemon) -> float:
    """How many GET /v1/events requests have been answered 200 (the daemon's own count)."""
    text = daemon.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "sagellm_api_requests":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name == "sagellm_api_requests_total"
                and sample.labels == {"route": "/v1/events", "method": "GET", "status": "200"}
            )
    return 0.0


def test_nan_long_polls_do_not_stall_the_daemons_timers(daemon: Daemon):
    last = daemon.get("/v1/events").json()["last_id"]
    with raw_connections(daemon, 10, poll_request(last, "nan")) as polls:
        time.sleep(0.3)  # the polls are in; before the fix each one put NaN into the timer heap
        started = time.monotonic()
        body = {"model": "fake/solo-1B", "env": {"FAKE_VLLM_IGNORE_SIGTERM": "1"}}
        assert daemon.put("/v1/engines/solo", body).status_code == 201
        daemon.wait_state("solo", "ready", timeout=30)
        became_ready = time.monotonic() - started
        assert became_ready < 5, f"ready after {became_ready:.1f} s (about 0.6 s is normal)"
        # The engine ignores SIGTERM: only the SIGKILL after stop_grace_s (2 s) removes it.
        started = time.monotonic()
        assert daemon.delete("/v1/engines/solo").status_code == 200
        daemon.wait_for(lambda: not engine_processes(daemon.home), 30, "the engine killed")
        stopped = time.monotonic() - started
        assert stopped < 6, f"killed after {stopped:.1f} s (stop_grace_s is 2 s)"
        for sock in polls:
            status, answer = read_answer(sock, timeout=5)
            assert status == 400
            assert "query parameter wait: must be a number" in answer["error"]["message"]


def test_a_long_poll_ends_when_its_client_goes_away(daemon: Daemon):
    last = daemon.get("/v1/events").json()["last_id"]
    answered = events_answered(daemon)
    with raw_connections(daemon, 5, poll_request(last, "60")):
        time.sleep(0.5)  # every poll is waiting in its handler now
        assert events_answered(daemon) == answered
    # The clients are gone; their handlers must end now, not when the 60 s are up.
    daemon.wait_for(
        lambda: events_answered(daemon) >= answered + 5, 3, "the abandoned long-polls to end"
    )


def _lower_open_files_limit() -> None:
    # The common default soft limit; the hard one too, so raising it cannot help and only
    # the daemon's own caps keep /healthz reachable.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _ensure_descriptors(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"needs {count} open files in the test process, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, BlockingIOError):
        return False


def test_idle_connections_cannot_starve_healthz_and_are_closed(make_daemon):
    idle_count = 1100
    _ensure_descriptors(idle_count + 256)
    daemon: Daemon = make_daemon(start=False, api={"header_timeout_s": 1})
    with daemon.log_path.open("ab") as log:
        daemon.process = subprocess.Popen(
            [sys.executable, "-m", "sagellmd.daemon", "--port", str(daemon.port)],
            env=daemon.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_lower_open_files_limit,
        )
    daemon.wait_for(daemon._healthy, 30, "daemon /healthz")
    sockets: list[socket.socket] = []
    try:
        for _ in range(idle_count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", daemon.port))  # in progress; no waiting on a full backlog
            sockets.append(sock)
        time.sleep(0.3)
        for index, sock in enumerate(sockets):
            if index % 2:  # half of them start a request head and never finish it
                with contextlib.suppress(OSError):
                    sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        health = httpx.get(f"{daemon.url}/healthz", timeout=5)
        took = time.monotonic() - started
        assert health.status_code == 200 and health.json()["ok"] is True
        assert took < 2, f"/healthz took {took:.1f} s next to {idle_count} idle connections"
        # Every idle connection is closed once the 1 s header timeout has passed (or earlier,
        # to make room).
        time.sleep(2.5)
        for sock in sockets:
            sock.settimeout(0.01)
        open_ones = [sock for sock in sockets if not _closed_by_peer(sock)]
        assert not open_ones, f"{len(open_ones)} of {idle_count} idle connections still open"
    finally:
        for sock in sockets:
            sock.close()
    assert daemon.get("/healthz").status_code == 200
