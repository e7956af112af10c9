"""Without `cluster:` in the config nothing of Ray is imported (issue 17, docs/multi-node.md).

Ray is not installed in the test environment, so "`ray` not in sys.modules" alone could not
fail: a module that did `try: import ray` would just get an ImportError. Each check puts a
stand-in `ray` package first on the path instead, whose import leaves a marker file, and
looks for both the module and the marker. The control test shows that the harness does see an
import of ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The modules each process of sagellm starts from: the daemon, the gateway, the CLI.
ENTRY_MODULES = ("sagellmd.daemon", "sagellmd.gateway.app", "sagellmd.cli.app")

CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ray" in sys.modules)
"""


def stand_in_ray(tmp_path: Path) -> tuple[Path, Path]:
    """A package named ray that records that it was imported; returns (its dir, marker)."""
    site = tmp_path / "site"
    (site / "ray").mkdir(parents=True)
    marker = tmp_path / "ray-was-imported"
    (site / "ray" / "__init__.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['RAY_IMPORT_MARKER']).write_text('imported')\n"
    )
    return site, marker


def run_imports(tmp_path: Path, *modules: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    site, marker = stand_in_ray(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "RAY_IMPORT_MARKER": str(marker),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *modules],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return result, marker


def test_the_harness_sees_an_import_of_ray(tmp_path: Path):
    result, marker = run_imports(tmp_path, "ray")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert marker.exists()


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_an_entry_module_does_not_import_ray(tmp_path: Path, module: str):
    result, marker = run_imports(tmp_path, module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"{module} imported ray"
    assert not marker.exists(), f"{module} imported ray"


# The building blocks of the cluster mode that Ray wraps or feeds: pure or plain Python, so
# the agent's core runs (and is tested) without Ray, and Ray stays an adapter around them.
RAY_FREE_CLUSTER_PARTS = (
    "sagellmd.cluster.agent_core",
    "sagellmd.cluster_config",
    "sagellmd.gpu.node_placement",
    "sagellmd.gpu.node_group_placement",
)


@pytest.mark.parametrize("module", RAY_FREE_CLUSTER_PARTS)
def test_a_cluster_building_block_does_not_import_ray(tmp_path: Path, module: str):
    result, marker = run_imports(tmp_path, module)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), f"{module} imported ray"


def test_the_ray_adapter_imports_ray_only_when_it_connects(tmp_path: Path):
    result, marker = run_imports(tmp_path, "sagellmd.cluster.ray_backend")
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "sagellmd.cluster.ray_backend imported ray at module level"
