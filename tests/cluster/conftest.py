"""A real local Ray cluster (ray.cluster_utils.Cluster: a head and raylets on this box) for
the cluster-mode tests (issue 17, docs/multi-node.md), one per test module.

Everything Ray writes lives in a short fresh temp dir (Unix socket paths have a 107-char
limit) so two clusters (two xdist workers, or another user's Ray) stay apart; every port
is picked by the OS. Teardown kills every process whose command line or environment names
that dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

ray = pytest.importorskip("ray")

FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


class LocalCluster:
    """A head named "head" (no GPUs) and the nodes a test adds by name; `fast` health checks
    unless told otherwise (bench/cluster_cost.py measures Ray's defaults too)."""

    def __init__(self, fast: bool = True, temp_dir: str | None = None) -> None:
        from ray.cluster_utils import Cluster

        self.fast = fast
        # A dir the caller gives stays theirs to remove (the bench's --keep keeps Ray's logs).
        self._owns_dir = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="sgray", dir="/tmp")
        os.makedirs(self.temp_dir, exist_ok=True)
        self._saved_env = {k: os.environ.get(k) for k in ("RAY_TMPDIR", *RAY_ENV)}
        # RAY_TMPDIR: where Cluster writes ray_current_cluster (else /tmp/ray, shared).
        os.environ.update({"RAY_TMPDIR": self.temp_dir, **RAY_ENV})
        self._nodes: dict[str, Any] = {}
        self._connected = False
        try:
            self.cluster = self._head(Cluster)
        except BaseException:
            self._cleanup()
            raise

    def _head(self, cluster_class: Any) -> Any:
        return cluster_class(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 1,
                "num_gpus": 0,
                "labels": {"sagellm.node": "head", "sagellm.gpus": "none"},
                # Ray writes ray_current_cluster to $RAY_TMPDIR/ray: it must exist.
                "temp_dir": os.path.join(self.temp_dir, "ray"),
                "include_dashboard": False,
                # The head's dashboard agent would take Ray's fixed 52365: a second cluster
                # on this box could not start. None lets the OS pick.
                "dashboard_agent_listen_port": None,
                "_system_config": FAST_HEALTH_CHECKS if self.fast else {},
            },
        )

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def env(self) -> dict[str, str]:
        """What a daemon under test needs in its environment to join this cluster."""
        return {"RAY_TMPDIR": self.temp_dir, **RAY_ENV}

    def add_node(self, name: str, gpus: str = "simulate:2x80", num_gpus: int = 2) -> None:
        node = self.cluster.add_node(
            num_cpus=1,
            num_gpus=num_gpus,
            labels={"sagellm.node": name, "sagellm.gpus": gpus},
            wait=True,
        )
        self._nodes[name] = node
        node_id = node.node_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = self.cluster.global_state.node_table()
            if any(n["NodeID"] == node_id and n["Alive"] for n in listed):
                return
            time.sleep(0.05)
        raise AssertionError(f"Ray never listed node {name} ({node_id}) alive")

    def remove_node(self, name: str) -> None:
        self.cluster.remove_node(self._nodes.pop(name), allow_graceful=False)

    def node_names(self) -> list[str]:
        return ["head", *self._nodes]

    def driver(self) -> Any:
        """Make this test process a Ray driver of the cluster (for checks of Ray's own view)."""
        if not self._connected:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            self._connected = True
        return ray

    def close(self) -> None:
        try:
            if ray.is_initialized():
                ray.shutdown()
            self.cluster.shutdown()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            kill_marked(self.temp_dir)
            if self._owns_dir:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        finally:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or environment names `marker`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(process.info["cmdline"] or []) or any(
                marker in value for value in process.environ().values()
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def kill_marked(marker: str) -> None:
    for process in marked(marker):
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(marked(marker), timeout=5)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster
    finally:
        cluster.close()
