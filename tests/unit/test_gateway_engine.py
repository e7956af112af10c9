"""Owns the tests of sagellmd/reconcile/gateway_engine.py and the `gateway` runtime kind: the
desired gateway built from the settings, its argv, env and probe, and what changes its hash."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from sagellmd.config import load_settings
from sagellmd.reconcile.gateway_engine import daemon_engines, gateway_engine
from sagellmd.runtime.argv import build_argv, build_env
from sagellmd.runtime.kinds import kind_for, wants_gpu


def settings(tmp_path: Path, **changes):
    return dataclasses.replace(load_settings(home=tmp_path, environ={}), **changes)


def test_the_gateway_is_desired_only_when_enabled(tmp_path):
    assert list(daemon_engines(settings(tmp_path))) == ["gateway"]
    assert daemon_engines(settings(tmp_path, gateway_enabled=False)) == {}


def test_its_argv_is_the_gateway_module_with_host_port_and_daemon_url(tmp_path):
    s = settings(tmp_path, gateway_host="127.0.0.2", gateway_port=8123, api_port=9999)
    engine = gateway_engine(s)
    argv = build_argv(engine.spec, s, engine.id, engine.spec.port)
    assert argv == [
        sys.executable,
        "-m",
        "sagellmd.gateway",
        "--host",
        "127.0.0.2",
        "--port",
        "8123",
        "--daemon-url",
        "http://127.0.0.1:9999",
    ]


def test_a_wildcard_api_bind_is_reached_on_loopback(tmp_path):
    s = settings(tmp_path, api_host="0.0.0.0", api_port=9000)
    engine = gateway_engine(s)
    assert build_argv(engine.spec, s, engine.id, 8000)[-1] == "http://127.0.0.1:9000"


def test_its_env_carries_the_markers_and_the_settings_json(tmp_path):
    s = settings(
        tmp_path,
        gateway_policy="fair",
        gateway_balance="prefix",
        gateway_retries=1,
        gateway_max_waiting=5,
        gateway_queue_timeout_s=3.0,
        gateway_api_keys=("k1", "k2"),
        gateway_slo_ttft_ms=500.0,
    )
    engine = gateway_engine(s)
    env = build_env(engine.spec, s, engine.id, 8000)
    assert env["SAGELLM_ENGINE_ID"] == "gateway"
    assert env["SAGELLM_HOME"] == str(s.home)
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert json.loads(env["SAGELLM_GATEWAY_SETTINGS"]) == {
        "policy": "fair",
        "balance": "prefix",
        "retries": 1,
        "max_waiting": 5,
        "queue_timeout_s": 3.0,
        "api_keys": ["k1", "k2"],
        "slo_ttft_ms": 500.0,
        "priority_aging_s": 10.0,
    }


def test_it_wants_no_gpu_no_model_and_is_probed_on_health(tmp_path):
    s = settings(tmp_path)
    spec = gateway_engine(s).spec
    kind = kind_for(spec.runtime)
    assert not wants_gpu(spec)
    assert kind.missing_model(spec, s) is None
    assert kind.health_path == "/health"
    assert spec.restart == "always" and spec.port == 8000


def test_the_probe_reaches_a_wildcard_bind_on_loopback(tmp_path):
    kind = kind_for("gateway")
    assert kind.probe_host(gateway_engine(settings(tmp_path, gateway_host="0.0.0.0")).spec) == (
        "127.0.0.1"
    )
    assert kind.probe_host(gateway_engine(settings(tmp_path, gateway_host="::")).spec) == "::1"
    bound = settings(tmp_path, gateway_host="10.1.2.3", gateway_api_keys=("k",))
    assert kind.probe_host(gateway_engine(bound).spec) == "10.1.2.3"


def test_the_same_settings_give_the_same_hash_and_a_changed_one_another(tmp_path):
    # Same hash: a restarted daemon adopts the running gateway; another: it is replaced.
    base = gateway_engine(settings(tmp_path)).spec.spec_hash
    assert gateway_engine(settings(tmp_path)).spec.spec_hash == base
    for change in (
        {"gateway_policy": "fifo"},
        {"gateway_port": 8001},
        {"gateway_api_keys": ("k",)},
        {"api_port": 9000},
        {"gateway_host": "127.0.0.5"},
    ):
        assert gateway_engine(settings(tmp_path, **change)).spec.spec_hash != base, change
