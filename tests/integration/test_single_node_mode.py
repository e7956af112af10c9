"""Without `cluster:` sagellm is the one-box daemon it was, and nothing of Ray is loaded;
with `cluster:` it refuses to start, for now, saying multi-node is not built yet
(issue 17, docs/multi-node.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

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


def test_a_cluster_section_is_refused_at_start_naming_the_design(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("cluster: {backend: ray, address: auto, namespace: sagellm}\n")
    home = tmp_path / "home"
    result = run_sagellmd("--port", str(free_port()), "--config", str(config), home=home)
    assert_refused(result, f"{config}: cluster: multi-node")
    assert "not built yet" in result.stderr
    assert "docs/multi-node.md" in result.stderr
    assert not home.exists()


def test_an_empty_cluster_section_is_refused_too(tmp_path: Path):
    """The key alone says a cluster was meant; running on this box instead would mislead."""
    config = tmp_path / "config.yaml"
    config.write_text("cluster:\ngpus: auto\n")
    result = run_sagellmd("--port", str(free_port()), "--config", str(config), home=tmp_path / "h")
    assert_refused(result, "cluster: multi-node")
