"""The JSON Schema of config.yaml: its sections, keys, types and bounds.

config.py reads its key lists and bounds from here. Each scalar carries `x-setting`, the
Settings field it sets. Values still go through config.py's coercion first: environment
variables arrive as strings ("8765", "yes"), which a JSON Schema alone would refuse.
Sections with `additionalProperties: false` refuse unknown keys; the others have always
ignored them.
"""

from __future__ import annotations

from typing import Any


def _setting(
    field: str,
    type_: str,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_, "x-setting": field}
    if choices:
        schema["enum"] = list(choices)
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _section(properties: dict[str, Any], closed: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


PORT = (1, 65535)
GATEWAY_POLICIES = ("fifo", "priority", "slo", "fair", "adaptive")
GATEWAY_BALANCES = ("least-outstanding", "prefix", "kv-aware", "cost")

CONFIG_SCHEMA: dict[str, Any] = _section(
    {
        "api": _section(
            {
                "host": _setting("api_host", "string"),
                "port": _setting("api_port", "integer", *PORT),
                "header_timeout_s": _setting("api_header_timeout_s", "number", 0.1, 3600),
                "keep_alive_s": _setting("api_keep_alive_s", "number", 0.1, 3600),
            },
            closed=True,
        ),
        "gpus": _setting("gpus", "string"),
        "placement": _section(
            {
                "headroom": _setting("headroom", "number", 0.05, 1.0),
                "kv_cache_gb": _setting("kv_cache_gb", "number", 0),
                "overhead_gb": _setting("overhead_gb", "number", 0),
            },
            closed=True,
        ),
        "ports": _section(
            {
                "start": _setting("port_start", "integer", *PORT),
                "end": _setting("port_end", "integer", *PORT),
            },
            closed=False,
        ),
        "restart": _section(
            {
                "backoff_base_s": _setting("backoff_base_s", "number", 0),
                "backoff_max_s": _setting("backoff_max_s", "number", 0),
                "reset_after_s": _setting("reset_after_s", "number", 0),
            },
            closed=False,
        ),
        "rollout": _section(
            {"min_healthy_s": _setting("min_healthy_s", "number", 0, 3600)}, closed=False
        ),
        "probes": _section(
            {
                "startup_probe_interval_s": _setting("startup_probe_interval_s", "number", 0),
                "liveness_interval_s": _setting("liveness_interval_s", "number", 0),
                "liveness_failures": _setting("liveness_failures", "integer", 1),
                "probe_timeout_s": _setting("probe_timeout_s", "number", 0),
            },
            closed=False,
        ),
        # Argv templates by runtime name; config.py checks each command.
        "runtimes": {"type": "object"},
        "stop_grace_s": _setting("stop_grace_s", "number", 0),
        "tick_s": _setting("tick_s", "number", 0),
        "stop_engines_on_exit": _setting("stop_engines_on_exit", "boolean"),
        "gateway": _section(
            {
                "enabled": _setting("gateway_enabled", "boolean"),
                "host": _setting("gateway_host", "string"),
                "port": _setting("gateway_port", "integer", *PORT),
                "policy": _setting("gateway_policy", "string", choices=GATEWAY_POLICIES),
                "balance": _setting("gateway_balance", "string", choices=GATEWAY_BALANCES),
                "retries": _setting("gateway_retries", "integer", 0, 10),
                "slo_ttft_ms": {
                    **_setting("gateway_slo_ttft_ms", "number", 1, 3_600_000),
                    "type": ["number", "null"],
                },
                "priority_aging_s": _setting("gateway_priority_aging_s", "number", 0, 86400),
                "queue": _section(
                    {
                        "max_waiting": _setting("gateway_max_waiting", "integer", 0, 1_000_000),
                        "timeout_s": _setting("gateway_queue_timeout_s", "number", 0, 86400),
                    },
                    closed=True,
                ),
                # Bearer keys of the gateway's clients; config.py checks them and reads the file.
                "api_keys": {"type": ["array", "null"], "items": {"type": "string"}},
                "api_keys_file": {"type": ["string", "null"]},
            },
            closed=True,
        ),
        # Multi-node on Ray (docs/multi-node.md); cluster_config.py checks its keys.
        "cluster": {"type": ["object", "null"]},
        "models": _section(
            {
                # Absolute directories; config.py checks each path.
                "paths": {"type": ["array", "null"], "items": {"type": "string"}},
                "hub_check": _setting("hub_check", "boolean"),
            },
            closed=True,
        ),
    },
    closed=True,
)
