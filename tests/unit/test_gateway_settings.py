"""Owns the tests of sagellmd/gateway/settings.py: argv, the settings env, the bind guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagellmd.gateway.settings import (
    SETTINGS_ENV,
    GatewaySettingsError,
    is_loopback,
    settings_from,
)


def _env(document: object = None, **extra: str) -> dict[str, str]:
    environ = dict(extra)
    if document is not None:
        environ[SETTINGS_ENV] = document if isinstance(document, str) else json.dumps(document)
    return environ


def test_defaults_without_argv_or_env():
    settings = settings_from([], {})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.daemon_url == "http://127.0.0.1:8765"
    assert settings.policy == "adaptive"
    assert settings.balance == "least-outstanding"
    assert settings.max_waiting == 1024
    assert settings.queue_timeout_s == 60.0
    assert settings.retries == 2
    assert settings.api_keys == ()
    assert settings.slo_ttft_ms is None
    assert settings.url == "http://127.0.0.1:8000"


def test_argv_and_env_are_read():
    document = {
        "policy": "priority",
        "balance": "prefix",
        "max_waiting": 7,
        "queue_timeout_s": 2.5,
        "retries": 0,
        "api_keys": ["k1", "k2"],
        "slo_ttft_ms": 250,
        "priority_aging_s": 3,
    }
    settings = settings_from(
        ["--host", "127.0.0.2", "--port", "9001", "--daemon-url", "http://127.0.0.1:1/"],
        _env(document, SAGELLM_HOME="/tmp/some-home"),
    )
    assert (settings.host, settings.port) == ("127.0.0.2", 9001)
    assert settings.daemon_url == "http://127.0.0.1:1"  # no trailing slash to double
    assert settings.home == Path("/tmp/some-home")
    assert settings.token_path == Path("/tmp/some-home/token")
    assert (settings.policy, settings.balance) == ("priority", "prefix")
    assert settings.max_waiting == 7 and isinstance(settings.max_waiting, int)
    assert settings.queue_timeout_s == 2.5
    assert settings.retries == 0
    assert settings.api_keys == ("k1", "k2")
    assert settings.slo_ttft_ms == 250.0
    assert settings.priority_aging_s == 3.0


def test_ipv6_url_is_bracketed():
    assert settings_from(["--host", "::1"], {}).url == "http://[::1]:8000"


def test_non_loopback_without_keys_is_refused_naming_both_settings():
    with pytest.raises(GatewaySettingsError) as refused:
        settings_from(["--host", "0.0.0.0"], {})
    message = str(refused.value)
    assert "gateway.host" in message
    assert "gateway.api_keys" in message
    assert "0.0.0.0" in message


def test_non_loopback_with_keys_is_allowed():
    settings = settings_from(["--host", "0.0.0.0"], _env({"api_keys": ["secret"]}))
    assert settings.host == "0.0.0.0"
    assert settings.api_keys == ("secret",)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"policy": "lifo"}), "gateway.policy"),
        (json.dumps({"balance": "random"}), "gateway.balance"),
        (json.dumps({"api_keys": "k1"}), "api_keys"),
        (json.dumps({"api_keys": ["k1", ""]}), "api_keys"),
        (json.dumps({"api_keys": [1]}), "api_keys"),
        (json.dumps({"max_waiting": "many"}), "max_waiting"),
        (json.dumps({"retries": True}), "retries"),
        (json.dumps({"queue_timeout_s": [1]}), "queue_timeout_s"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(raw, named):
    with pytest.raises(GatewaySettingsError, match=named):
        settings_from([], _env(raw))


def test_unknown_policy_message_lists_the_known_ones():
    with pytest.raises(GatewaySettingsError, match="known: fifo, priority, slo, fair, adaptive"):
        settings_from([], _env({"policy": "lifo"}))


def test_every_refusal_names_the_env_or_the_setting():
    with pytest.raises(GatewaySettingsError, match=SETTINGS_ENV):
        settings_from([], _env("{"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_null_means_the_default_for_every_number():
    # Every key is optional and null reads as unset, not as a None cap that breaks the queues.
    document = {
        "max_waiting": None,
        "queue_timeout_s": None,
        "retries": None,
        "slo_ttft_ms": None,
        "priority_aging_s": None,
    }
    settings = settings_from([], _env(document))
    assert settings.max_waiting == 1024
    assert settings.queue_timeout_s == 60.0
    assert settings.retries == 2
    assert settings.slo_ttft_ms is None
    assert settings.priority_aging_s == 10.0
