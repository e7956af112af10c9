"""The gateway process as a desired engine the loop plans over: built from the settings,
never stored (no generation, no rollout, not in the engine lists)."""

from __future__ import annotations

import json
from typing import Any

from sagellmd.config import Settings
from sagellmd.desired import DesiredEngine
from sagellmd.runtime.kinds.gateway import DAEMON_URL_VARIABLE, HOST_VARIABLE, SETTINGS_VARIABLE
from sagellmd.spec import GATEWAY_ENGINE_ID, GATEWAY_RUNTIME, EngineSpec

# The gateway binds and answers /health in well under a second; 30 s covers a loaded box.
STARTUP_TIMEOUT_S = 30.0
UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def gateway_settings(settings: Settings) -> dict[str, Any]:
    """The JSON of SAGELLM_GATEWAY_SETTINGS (GATEWAY-CONTRACT.md), keys resolved."""
    return {
        "policy": settings.gateway_policy,
        "balance": settings.gateway_balance,
        "max_waiting": settings.gateway_max_waiting,
        "queue_timeout_s": settings.gateway_queue_timeout_s,
        "retries": settings.gateway_retries,
        "api_keys": list(settings.gateway_api_keys),
        "slo_ttft_ms": settings.gateway_slo_ttft_ms,
        "priority_aging_s": settings.gateway_priority_aging_s,
    }


def daemon_url_for_gateway(settings: Settings) -> str:
    """The daemon's API as a local client reaches it (a wildcard bind answers on loopback)."""
    host = UNSPECIFIED.get(settings.api_host, settings.api_host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.api_port}"


def gateway_engine(settings: Settings) -> DesiredEngine:
    """The desired gateway: fixed port gateway.port, no GPU, always restarted."""
    env = {
        HOST_VARIABLE: settings.gateway_host,
        DAEMON_URL_VARIABLE: daemon_url_for_gateway(settings),
        SETTINGS_VARIABLE: json.dumps(gateway_settings(settings), sort_keys=True),
    }
    spec = EngineSpec(
        name=GATEWAY_ENGINE_ID,
        model="sagellmd.gateway",
        kind="llm",
        runtime=GATEWAY_RUNTIME,
        port=settings.gateway_port,
        use_gpu=False,
        env=env,
        restart="always",
        startup_timeout_s=STARTUP_TIMEOUT_S,
    )
    return DesiredEngine(id=GATEWAY_ENGINE_ID, preset=None, spec=spec)


def daemon_engines(settings: Settings) -> dict[str, DesiredEngine]:
    """The engines the daemon itself wants beside the user's: the gateway when enabled."""
    if not settings.gateway_enabled:
        return {}
    return {GATEWAY_ENGINE_ID: gateway_engine(settings)}
