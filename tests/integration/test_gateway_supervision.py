"""The daemon supervises the real gateway process (python -m sagellmd.gateway) like an engine:
spawned, restarted at once after a SIGKILL, adopted across a daemon restart, stopped when
disabled, and kept out of the user's engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import Daemon, base_config, fake_preset, free_port


def gateway_config(**gateway: Any) -> dict[str, Any]:
    return {"gateway": {"enabled": True, "port": free_port(), **gateway}}


def gateway_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_gateway_ready(daemon: Daemon, timeout: float = 20) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        section = daemon.get("/v1/gateway").json()
        return section if section["state"] == "ready" else None

    return daemon.wait_for(ready, timeout, "the gateway to be ready")


def test_the_gateway_is_spawned_probed_and_shown_apart_from_the_engines(make_daemon):
    daemon = make_daemon(**gateway_config())
    port = daemon.config["gateway"]["port"]
    section = wait_gateway_ready(daemon)
    assert section["enabled"] is True
    assert section["url"] == f"http://127.0.0.1:{port}"
    assert gateway_up(port)
    process = psutil.Process(section["pid"])
    assert process.cmdline()[1:3] == ["-m", "sagellmd.gateway"]
    assert process.cmdline()[3:] == [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--daemon-url",
        daemon.url,
    ]
    env = process.environ()
    assert env["SAGELLM_ENGINE_ID"] == "gateway" and env["SAGELLM_HOME"] == str(daemon.home)
    assert '"policy": "adaptive"' in env["SAGELLM_GATEWAY_SETTINGS"]
    status = daemon.get("/v1/status").json()
    assert status["gateway"]["pid"] == section["pid"]
    assert status["engines"] == []  # the gateway is no engine of the user's
    assert daemon.get("/v1/engines").json()["engines"] == []
    assert daemon.get("/v1/engines/gateway").status_code == 404
    assert daemon.get("/v1/management/status").json()["engines"] == []
    # No engine may take its port.
    taken = daemon.put("/v1/engines/x", {"model": "fake/model-1B", "port": port})
    assert taken.status_code == 409 and "gateway.port" in taken.json()["error"]["message"]
    assert daemon.post("/v1/engines/gateway/restart").status_code == 404
    # Its log is readable like an engine's.
    assert daemon.get("/v1/engines/gateway/logs").status_code == 200
    assert any(event["type"] == "ready" for event in daemon.events("gateway"))
    shown = daemon.cli("status")
    assert f"gateway: ready http://127.0.0.1:{port} (pid {section['pid']})" in shown.stdout
    assert "INFLIGHT/QUEUED" not in shown.stdout  # no report from the gateway yet
    printed = daemon.cli("gateway")
    assert printed.returncode == 0 and f"http://127.0.0.1:{port}" in printed.stdout


def test_a_sigkilled_gateway_is_back_within_a_second_and_the_exit_is_an_event(make_daemon):
    daemon = make_daemon(**gateway_config())
    port = daemon.config["gateway"]["port"]
    first = wait_gateway_ready(daemon)
    last_id = daemon.get("/v1/events", params={"after": 0, "limit": 1000}).json()["last_id"]
    killed_at = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        section = daemon.get("/v1/gateway").json()
        if section["pid"] != first["pid"] and section["state"] == "ready" and gateway_up(port):
            return section
        return None

    second = daemon.wait_for(back, 10, "the gateway to come back")
    assert time.monotonic() - killed_at < 1.0, "the gateway took over a second to come back"
    assert second["restarts"] == first["restarts"] + 1
    exits = [e for e in daemon.events("gateway", after=last_id) if e["type"] == "exited"]
    assert exits and "signal 9" in exits[0]["message"], exits


def test_a_daemon_restart_adopts_the_gateway_with_its_pid(make_daemon):
    daemon = make_daemon(**gateway_config())
    first = wait_gateway_ready(daemon)
    daemon.stop(signal.SIGKILL)
    assert psutil.pid_exists(first["pid"])
    daemon.start()
    section = wait_gateway_ready(daemon)
    assert section["pid"] == first["pid"] and section["restarts"] == first["restarts"]
    adopted = [e for e in daemon.events("gateway") if e["type"] == "adopted"]
    assert adopted and str(first["pid"]) in adopted[-1]["message"]
    time.sleep(0.5)  # a pass or two later, still the same process
    assert daemon.get("/v1/gateway").json()["pid"] == first["pid"]


def test_disabling_the_gateway_stops_it_and_none_runs(make_daemon):
    daemon = make_daemon(**gateway_config())
    first = wait_gateway_ready(daemon)
    daemon.stop()
    daemon.extra_env["SAGELLM_GATEWAY_ENABLED"] = "false"
    daemon.start()

    def gone() -> bool:
        return not psutil.pid_exists(first["pid"]) or (
            psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
        )

    daemon.wait_for(gone, 15, "the gateway to be stopped")
    daemon.wait_for(
        lambda: daemon.get("/v1/gateway").json()["state"] == "disabled", 10, "no gateway"
    )
    section = daemon.get("/v1/gateway").json()
    assert section["enabled"] is False and section["pid"] is None


def test_a_disabled_gateway_is_never_started(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}))
    daemon.wait_state("p.chat", "ready")
    assert daemon.get("/v1/gateway").json()["state"] == "disabled"
    assert daemon.events("gateway") == []


def test_stop_engines_on_exit_stops_the_gateway_too(make_daemon):
    daemon = make_daemon(stop_engines_on_exit=True, **gateway_config())
    first = wait_gateway_ready(daemon)
    assert daemon.stop() == 0
    process = psutil.Process(first["pid"]) if psutil.pid_exists(first["pid"]) else None
    assert process is None or process.status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        ({"host": "0.0.0.0"}, "gateway.api_keys"),
        ({"policy": "random"}, "gateway.policy: must be one of fifo, priority"),
        ({"port": "eighty"}, "gateway.port: must be an integer"),
        ({"queue": {"max_waiting": -1}}, "gateway.queue.max_waiting: must be >= 0"),
        ({"api_keys": ["two words"]}, "gateway.api_keys[0]: must not contain whitespace"),
        ({"api_keys_file": "/nonexistent/keys"}, "gateway.api_keys_file: cannot read"),
    ],
)
def test_bad_gateway_settings_stop_sagellmd_with_exit_2_naming_the_field(
    tmp_path, gateway, expected
):
    import yaml

    home = tmp_path / "home"
    home.mkdir()
    config = base_config(gateway={"enabled": True, "port": free_port(), **gateway})
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "sagellmd.daemon", "--port", str(free_port())],
        env={**os.environ, "SAGELLM_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    if "host" in gateway:
        assert "gateway.host" in result.stderr and "127.0.0.1" in result.stderr


def test_a_non_loopback_gateway_with_keys_from_a_file_starts(make_daemon, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# clients\nk-one\n\nk-two\n")
    daemon = make_daemon(**gateway_config(host="0.0.0.0", api_keys_file=str(keys)))
    section = wait_gateway_ready(daemon)
    env = psutil.Process(section["pid"]).environ()
    assert '"api_keys": ["k-one", "k-two"]' in env["SAGELLM_GATEWAY_SETTINGS"]


def test_the_gateway_name_and_runtime_are_reserved(daemon: Daemon):
    refused = daemon.put("/v1/engines/gateway", {"model": "fake/model-1B"})
    assert refused.status_code == 400
    assert "reserved" in refused.json()["error"]["message"]
    by_runtime = daemon.put("/v1/engines/other", {"model": "fake/m", "runtime": "gateway"})
    assert by_runtime.status_code == 400
    assert "runtime: 'gateway' is reserved" in by_runtime.json()["error"]["message"]
    in_preset = daemon.put(
        "/v1/presets/p", fake_preset("p", {"name": "chat", "runtime": "gateway"})
    )
    assert in_preset.status_code == 400, in_preset.text
    cli = daemon.cli("engine", "start", "fake/model-1B", "--name", "gateway")
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "reserved" in cli.stdout + cli.stderr
