"""Runs the gateway: uvicorn (uvloop, httptools) in front of the app, signals, shutdown."""

from __future__ import annotations

import logging
import sys

import uvicorn

from sagellmd.gateway.app import GatewayApp
from sagellmd.gateway.settings import GatewaySettings, GatewaySettingsError, settings_from

log = logging.getLogger("sagellmd.gateway")


def _config(app: GatewayApp, settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        # Nothing sits in front of the gateway to trust X-Forwarded-For from; the middleware
        # would cost every request a scope copy.
        proxy_headers=False,  # the engine's own Server and Date headers pass through
        date_header=False,  # the gateway writes its own access line per request
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=30,
        # SIGTERM: stop accepting, let in-flight requests finish, then go.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = settings_from(argv)
    except GatewaySettingsError as exc:
        print(f"sagellm gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = GatewayApp(settings)
    server = uvicorn.Server(_config(app, settings))
    log.info("gateway listening on %s, daemon %s", settings.url, settings.daemon_url)
    try:
        server.run()
    except OSError as exc:
        print(f"sagellm gateway: cannot listen on {settings.url}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if not server.started:
        raise SystemExit(1)
