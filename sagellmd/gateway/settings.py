"""The gateway's settings: its bind address and daemon from argv, the rest from one JSON env."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagellmd.gateway.balance import STRATEGIES
from sagellmd.gateway.queueing import POLICIES

SETTINGS_ENV = "SAGELLM_GATEWAY_SETTINGS"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class GatewaySettingsError(Exception):
    """A setting the gateway cannot start with; the message names it and the fix."""


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    daemon_url: str = "http://127.0.0.1:8765"
    home: Path = Path(".")
    policy: str = "adaptive"
    balance: str = "least-outstanding"
    max_waiting: int = 1024
    queue_timeout_s: float = 60.0
    retries: int = 2
    api_keys: tuple[str, ...] = ()
    # A TTFT deadline for requests that name none (slo policy); None: no deadline.
    slo_ttft_ms: float | None = None
    priority_aging_s: float = 10.0
    # How long an engine that failed a request is skipped unless the daemon says otherwise.
    suspect_s: float = 2.0
    graceful_shutdown_s: float = 8.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(document: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = document.get(key)
    if value is None:  # null is unset, as for slo_ttft_ms: a null cap would break every queue
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewaySettingsError(f"{SETTINGS_ENV}: {key} must be a number, got {value!r}")
    return kind(value)


def settings_from(
    argv: list[str] | None = None, environ: dict[str, str] | None = None
) -> GatewaySettings:
    """Parse argv and the settings env; refuse a non-loopback bind without API keys."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m sagellmd.gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--daemon-url", default="http://127.0.0.1:8765")
    args = parser.parse_args(argv)
    raw = environ.get(SETTINGS_ENV) or "{}"
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise GatewaySettingsError(f"{SETTINGS_ENV}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise GatewaySettingsError(f"{SETTINGS_ENV}: must be a JSON object, got {raw[:80]!r}")
    keys = document.get("api_keys") or []
    if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
        raise GatewaySettingsError(f"{SETTINGS_ENV}: api_keys must be a list of non-empty strings")
    settings = GatewaySettings(
        host=args.host,
        port=args.port,
        daemon_url=args.daemon_url.rstrip("/"),
        home=Path(environ.get("SAGELLM_HOME") or "."),
        policy=str(document.get("policy", "adaptive")),
        balance=str(document.get("balance", "least-outstanding")),
        max_waiting=_number(document, "max_waiting", int, 1024),
        queue_timeout_s=_number(document, "queue_timeout_s", float, 60.0),
        retries=_number(document, "retries", int, 2),
        api_keys=tuple(keys),
        slo_ttft_ms=_number(document, "slo_ttft_ms", float, None),
        priority_aging_s=_number(document, "priority_aging_s", float, 10.0),
        suspect_s=_number(document, "suspect_s", float, 2.0),
        graceful_shutdown_s=_number(document, "graceful_shutdown_s", float, 8.0),
    )
    if settings.policy not in POLICIES:
        raise GatewaySettingsError(
            f"gateway.policy: {settings.policy!r} is not a policy; known: {', '.join(POLICIES)}"
        )
    if settings.balance not in STRATEGIES:
        raise GatewaySettingsError(
            f"gateway.balance: {settings.balance!r} is not a strategy;"
            f" known: {', '.join(STRATEGIES)}"
        )
    if not settings.api_keys and not is_loopback(settings.host):
        raise GatewaySettingsError(
            f"gateway.host: {settings.host} is not a loopback address and gateway.api_keys is"
            " empty: anyone on the network could use the engines. Set gateway.api_keys (or"
            " gateway.api_keys_file), or bind gateway.host: 127.0.0.1"
        )
    return settings
