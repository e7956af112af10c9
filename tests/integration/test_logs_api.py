"""`GET /v1/engines/{id}/logs`: huge logs neither stall the daemon nor come back whole."""

from __future__ import annotations

import threading
import time

import httpx

from tests.integration.conftest import Daemon


def test_a_huge_single_line_log_is_capped_and_healthz_stays_prompt(daemon: Daemon) -> None:
    daemon.put("/v1/engines/chatty", {"model": "fake/chatty-1B"})
    daemon.wait_state("chatty", "ready")
    log = daemon.home / "logs" / "chatty.log"
    with log.open("ab") as handle:
        chunk = b"y" * (1 << 20)
        for _ in range(80):  # 80 MB without a line break, like a stuck progress bar
            handle.write(chunk)
        handle.write(b"-the-end")
    answers: list[httpx.Response] = []

    def tail() -> None:
        with httpx.Client(base_url=daemon.url, timeout=90) as client:
            answers.append(client.get("/v1/engines/chatty/logs", params={"tail": 1}))

    readers = [threading.Thread(target=tail) for _ in range(6)]
    for reader in readers:
        reader.start()
    slowest = 0.0
    while any(reader.is_alive() for reader in readers):
        started = time.monotonic()
        assert daemon.get("/healthz").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.02)
    for reader in readers:
        reader.join()
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s while logs were read"
    assert len(answers) == 6
    for response in answers:
        assert response.status_code == 200
        body = response.json()
        assert body["truncated"] is True
        assert "cut to the last" in body["message"] and str(log) in body["message"]
        assert len(body["lines"]) == 1
        assert body["lines"][0].endswith("y-the-end")
        assert len(body["lines"][0]) <= body["max_bytes"] <= 1 << 20
        assert len(response.content) < 2 << 20


def test_carriage_returns_end_lines_in_a_tail(daemon: Daemon) -> None:
    daemon.put("/v1/engines/bar", {"model": "fake/bar-1B"})
    daemon.wait_state("bar", "ready")
    log = daemon.home / "logs" / "bar.log"
    with log.open("ab") as handle:
        handle.write(b"".join(b"loading %d%%\r" % i for i in range(101)))
    body = daemon.get("/v1/engines/bar/logs", params={"tail": 3}).json()
    assert body["lines"] == ["loading 98%", "loading 99%", "loading 100%"]
    assert body["truncated"] is False
