"""Without `cluster:` sagellm is the one-box daemon it was, and nothing of Ray is loaded;
with `cluster:` and no Ray, or no cluster to join, it says so at start (issue 17,
docs/multi-node.md; the cluster itself is tested in tests/cluster/)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, fake_preset, free_port
from tests.integration.test_daemon_start import assert_refused, run_sagellmd
from tests.unit.test_no_ray_import import stand_in_ray


def test_daemon_gateway_engine_and_cli_run_without_importing_ray(make_daemon: Any, tmp_path):
    """Lazy imports count too: a whole daemon, its gateway, an engine and a CLI call, with a
    stand-in ray first on every process's path that would leave a marker if imported."""
    site, marker = stand_in_ray(tmp_path)
    daemon = make_daemon(start=False, gateway={"enabled": True, "port": free_port()})
    daemon.extra_env.update(
        {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "RAY_IMPORT_MARKER": str(marker)}
    )
    daemon.start()
    answer = daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}))
    assert answer.status_code in (200, 201), answer.text
    daemon.wait_state("p.chat", "ready")
    gateway = f"http://127.0.0.1:{daemon.config['gateway']['port']}"

    def served() -> bool:
        try:
            reply = httpx.post(
                f"{gateway}/v1/completions",
                json={"model": "fake/model-1B", "prompt": "hi", "max_tokens": 2},
                timeout=5,
            )
        except httpx.TransportError:
            return False
        return reply.status_code == 200

    daemon.wait_for(served, 30, "a completion through the gateway")
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert not marker.exists(), "a sagellm process imported ray without cluster: in the config"


def test_a_cluster_section_without_ray_installed_is_refused_before_the_home_is_made(
    tmp_path: Path,
):
    # A ray package that cannot be imported stands for one that is not installed.
    site = tmp_path / "site"
    (site / "ray").mkdir(parents=True)
    (site / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    config = tmp_path / "config.yaml"
    config.write_text("cluster: {backend: ray, address: auto, namespace: sagellm}\n")
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("SAGELLM_HOME", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagellmd.daemon",
            "--home",
            str(home),
            "--config",
            str(config),
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert_refused(result, "cluster: needs Ray: pip install 'sagellm[ray]'")
    assert not home.exists()


def test_a_cluster_that_cannot_be_reached_stops_the_start_naming_its_address(tmp_path: Path):
    pytest.importorskip("ray")
    config = tmp_path / "config.yaml"
    dead = f"127.0.0.1:{free_port()}"
    config.write_text(f"cluster: {{address: '{dead}'}}\n")
    started = time.monotonic()
    result = run_sagellmd(
        "--port", str(free_port()), "--config", str(config), home=tmp_path / "h", timeout=90
    )
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the Ray cluster at {dead}" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
