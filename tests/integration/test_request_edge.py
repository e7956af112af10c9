"""Requests that could stall or starve the daemon: NaN long-polls, clients that go away,
and connections that never send a request."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
