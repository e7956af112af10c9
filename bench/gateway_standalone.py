"""The real gateway process run by the bench itself, fed a fixed route table.

For measuring the gateway where the daemon does not yet publish `GET /v1/routes`: the
bench serves that endpoint (and `POST /v1/gateway/activity`, answered 204) from a thread,
following GATEWAY-CONTRACT.md: the table answers at once when `after` differs from its
version, else after `wait` seconds unchanged. The gateway is the same program the daemon
runs (`python -m sagellmd.gateway`), with the same token file in a temp SAGELLM_HOME; only
its supervisor is missing, which is not in the request path.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from gateway_procs import HOST, ROOT, Proc, Profile, free_port, spawn, wait_http

ROUTE_VERSION = 1


def route_entry(profile: Profile, url: str) -> dict[str, Any]:
    return {
        "id": profile.name,
        "state": "ready",
        "ready": True,
        "url": url,
        "served_model": profile.name,
        "names": [profile.name],
        "label": None,
        "aliases": [],
        "kind": "llm",
        "runtime": "fast",
        "endpoints": ["/v1/chat/completions", "/v1/completions"],
        # Above the bench's highest concurrency: the cap must not be what is measured.
        "max_concurrent_requests": 1024,
        "metadata": {},
        "startup_timeout_s": 60,
        "message": "ready",
    }


class RouteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, table: dict[str, Any], token: str) -> None:
        self.table = json.dumps(table).encode()
        self.token = token
        self.activity: dict[str, Any] | None = None
        super().__init__((HOST, free_port()), RouteHandler)


class RouteHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RouteServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.token}":
            return True
        self.answer(401, b'{"error": {"code": "unauthorized"}}')
        return False

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/routes":
            self.answer(404, b"{}")
            return
        if not self.authorized():
            return
        query = parse_qs(url.query)
        if query.get("after") == [str(ROUTE_VERSION)]:
            # Unchanged: the long-poll waits its time out, as the daemon's does.
            time.sleep(min(60.0, float(query.get("wait", ["30"])[0])))
        self.answer(200, self.server.table)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.authorized():
            return
        if self.path == "/v1/gateway/activity":
            self.server.activity = json.loads(raw)
            self.send_response(204)
            self.end_headers()
        else:
            self.answer(404, b"{}")


def start_standalone_gateway(
    work: Path, profiles: list[Profile], engine_urls: dict[str, str]
) -> tuple[Proc, dict[str, str]]:
    """The gateway process on a free port, routing each profile's name to its engine."""
    home = work / "gateway-home"
    home.mkdir()
    token = os.urandom(16).hex()
    (home / "token").write_text(token + "\n")
    table = {
        "version": ROUTE_VERSION,
        "engines": [route_entry(p, engine_urls[p.name]) for p in profiles],
    }
    routes = RouteServer(table, token)
    threading.Thread(target=routes.serve_forever, name="bench-routes", daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "SAGELLM_HOME": str(home),
        "SAGELLM_ENGINE_ID": "gateway",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    daemon_url = f"http://{HOST}:{routes.server_address[1]}"
    argv = [sys.executable, "-m", "sagellmd.gateway", "--host", HOST, "--port", str(port)]
    log = work / "gateway.log"
    popen = spawn([*argv, "--daemon-url", daemon_url], log, env)

    def stop_routes() -> None:
        routes.shutdown()
        routes.server_close()

    proc = Proc("gateway", popen, [popen.pid], stop_hook=stop_routes)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(url + "/health", 20, popen, log)
        wait_models(url, [p.name for p in profiles], log)
    except BaseException:
        proc.stop()
        raise
    return proc, {p.name: url for p in profiles}


def wait_models(url: str, names: list[str], log: Path, timeout: float = 10) -> None:
    """Until the gateway lists every name: it has read the route table."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listed = {m["id"] for m in httpx.get(url + "/v1/models", timeout=2).json()["data"]}
        except (httpx.HTTPError, KeyError, ValueError):
            listed = set()
        if set(names) <= listed:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url}/v1/models never listed {names}: {log.read_text()[-2000:]}")
