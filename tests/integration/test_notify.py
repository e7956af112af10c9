"""sagellmd speaks systemd's notify protocol over a real datagram socket."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def _read_all(sock: socket.socket, until: float) -> list[str]:
    messages = []
    while time.monotonic() < until:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_ready_watchdog_and_stopping_are_sent(make_daemon, tmp_path: Path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.1)
        daemon = make_daemon(start=False)
        daemon.extra_env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        daemon.start()
        first = _read_all(sock, time.monotonic() + 1.5)
        assert first and first[0].startswith("READY=1\n")
        assert "STATUS=serving" in first[0]
        assert f"MAINPID={daemon.process.pid}" in first[0]
        # WATCHDOG_USEC=0.4 s: the loop must beat at least every 0.2 s.
        assert sum(m == "WATCHDOG=1" for m in first[1:]) >= 4
        assert daemon.stop() == 0
        last = _read_all(sock, time.monotonic() + 0.3)
        assert any(m.startswith("STOPPING=1") for m in last)


def test_no_notify_socket_means_no_messages_and_no_errors(daemon):
    assert daemon.get("/healthz").status_code == 200
    assert daemon.stop() == 0
    assert "sd_notify" not in daemon.log()
