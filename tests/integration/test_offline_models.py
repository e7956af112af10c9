"""Engines and the hub: offline from disk, a fast failure when the hub is needed and away."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.conftest import Daemon
from tests.integration.test_models import closed_port
from tests.unit.test_models import LLM, fake_cache


def started_env(entry: dict[str, Any]) -> dict[str, str]:
    return psutil.Process(entry["pid"]).environ()


def hub_daemon(make_daemon, tmp_path: Path, endpoint: str) -> Daemon:
    daemon = make_daemon(start=False, models={"hub_check": True})
    daemon.extra_env.update({"HF_HUB_CACHE": str(fake_cache(tmp_path)), "HF_ENDPOINT": endpoint})
    daemon.extra_env.pop("HF_HUB_OFFLINE", None)
    daemon.start()
    return daemon


@pytest.fixture
def answering_hub() -> Iterator[str]:
    """A stand-in endpoint that answers HEAD (the daemon's reachability probe) and nothing else."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_on_disk_runs_with_hf_hub_offline(make_daemon, tmp_path: Path) -> None:
    daemon = hub_daemon(make_daemon, tmp_path, f"http://127.0.0.1:{closed_port()}")
    daemon.put("/v1/engines/local", {"model": LLM})
    assert started_env(daemon.wait_state("local", "ready"))["HF_HUB_OFFLINE"] == "1"
    # An explicit choice in the spec stands.
    daemon.put("/v1/engines/chosen", {"model": LLM, "env": {"HF_HUB_OFFLINE": "0"}})
    assert started_env(daemon.wait_state("chosen", "ready"))["HF_HUB_OFFLINE"] == "0"


def test_a_model_not_on_disk_with_the_hub_away_fails_in_seconds(
    make_daemon, tmp_path: Path
) -> None:
    daemon = hub_daemon(make_daemon, tmp_path, f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    daemon.put("/v1/engines/away?rollback=false", {"model": "acme/absent-1B", "restart": "never"})
    entry = daemon.wait_state("away", "failed", timeout=10)
    assert time.monotonic() - started < 8
    assert entry["pid"] is None
    assert "not on this machine" in entry["message"]
    assert "not reachable" in entry["message"]
    assert "sagellm model download acme/absent-1B" in entry["message"]
    assert not (daemon.home / "logs" / "away.log").exists()  # never spawned


def test_a_model_not_on_disk_starts_when_the_hub_answers(
    make_daemon, tmp_path: Path, answering_hub: str
) -> None:
    daemon = hub_daemon(make_daemon, tmp_path, answering_hub)
    daemon.put("/v1/engines/remote", {"model": "acme/remote-1B"})
    assert "HF_HUB_OFFLINE" not in started_env(daemon.wait_state("remote", "ready", timeout=15))
