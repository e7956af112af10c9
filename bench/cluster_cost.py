"""What cluster mode costs the daemon, against the one-box daemon measured in the same run.

Run: PYTHONPATH=$PWD /work/main/.venv/bin/python bench/cluster_cost.py [--runs 3] [--kills 3]

A real sagellmd runs the stand-in vLLM engine (tests/fixtures/fake_vllm.py), alone (the
baseline, `gpus: simulate:2x80` on its own machine) and then with `cluster: {address,
namespace}` joined to a local Ray cluster (ray.cluster_utils.Cluster on this box: a head
labelled `sagellm.gpus: none`, so the daemon's machine has no GPUs, and node-b and node-c
with two simulated 80 GiB GPUs and `num_gpus=2` each). Figures, each as median and range:

1. the daemon's start (its process start to the first `/healthz` 200, polled every 5 ms)
   and its RSS (psutil, its own process) after the start and once one engine is ready;
2. an engine's SIGKILL to the daemon's `exited` event (its timestamp), to its new pid in
   `/v1/engines/{id}` and to `ready` (both polled every 10 ms): on the daemon's machine
   (baseline) vs on node-b or node-c, through its agent;
3. a node's power-off (its agent and engines SIGKILLed, then `remove_node`) to the engine's
   `lost` event and to `ready` on another node, with the fast health checks the tests use
   (200 ms x 3, timeout 500 ms) and with Ray's defaults (no `_system_config`: ~15 s).

Everything Ray writes goes to a fresh `RAY_TMPDIR` (/tmp/sgbench...); at the end every
process naming that dir and every engine of the bench's homes is SIGKILLed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cluster.conftest import LocalCluster, kill_marked  # noqa: E402
from tests.integration.conftest import Daemon, base_config, engine_processes  # noqa: E402

MIB = 1024 * 1024
ENGINE = "bench"
Figures = dict[str, list[float]]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


class BenchDaemon(Daemon):
    """The tests' daemon handle, with this bench's settings and measurements."""

    def __init__(self, home: Path, cluster: LocalCluster | None) -> None:
        start = 20000 + (os.getpid() % 120) * 100
        overrides: dict[str, Any] = {
            "ports": {"start": start, "end": start + 99},
            # Every kill a first crash (restarted at once), as in bench/crash_latency.py.
            "restart": {"backoff_base_s": 1, "backoff_max_s": 30, "reset_after_s": 0.3},
            # The daemon's own probe, grace and rollout settings, not the tests' faster ones.
            "probes": {},
            "stop_grace_s": 10,
            "rollout": {},
        }
        if cluster is not None:
            namespace = f"b{uuid.uuid4().hex[:10]}"
            overrides["cluster"] = {"address": cluster.address, "namespace": namespace}
        super().__init__(home, base_config(**overrides))
        self.extra_env["SAGELLM_LOG_LEVEL"] = "info"
        if cluster is not None:
            self.extra_env.update(cluster.env)

    def timed_start(self) -> float:
        """Seconds from the process start to the first /healthz 200 (polled every 5 ms)."""
        began = time.perf_counter()
        self.start(wait=False)
        wait_for(self._healthy, 60, "the daemon's /healthz", 0.005)
        return time.perf_counter() - began

    def rss_mib(self) -> float:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss / MIB

    def declare(self) -> None:
        answer = self.put(f"/v1/engines/{ENGINE}", {"model": "fake/bench-1B", "gpu_memory_gb": 20})
        if answer.status_code not in (200, 201):
            raise SystemExit(f"PUT {ENGINE}: {answer.status_code} {answer.text}")

    def entry(self) -> dict[str, Any]:
        return self.engine(ENGINE)

    def ready(self, timeout: float = 60, every: float = 0.01) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            entry = self.entry()
            return entry if entry["state"] == "ready" else None

        return wait_for(check, timeout, f"{ENGINE} ready", every)

    def last_event(self) -> int:
        return int(self.client.get("/v1/events", params={"limit": 1}).json()["last_id"])

    def nodes(self) -> dict[str, Any]:
        return {n["name"]: n for n in self.client.get("/v1/nodes").json()["nodes"]}

    def close(self) -> None:
        """Its engines (cleanup) and its agents: detached actors of its own namespace."""
        agents = []
        try:
            agents = [n["agent"]["pid"] for n in self.nodes().values() if n.get("agent")]
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        self.cleanup()
        for pid in agents:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_to_restart(daemon: BenchDaemon) -> tuple[float, float, float]:
    """SIGKILL the engine: seconds to the daemon's `exited` event (its timestamp), to the new
    pid in /v1/engines and to ready."""
    old = daemon.ready()
    time.sleep(0.5)  # past restart.reset_after_s: a first crash, restarted at once
    last = daemon.last_event()
    wall, killed = time.time(), time.perf_counter()
    os.kill(old["pid"], signal.SIGKILL)
    wait_for(lambda: daemon.entry()["pid"] not in (None, old["pid"]), 30, "a new pid", 0.01)
    new_pid = time.perf_counter() - killed
    daemon.ready()
    ready = time.perf_counter() - killed
    params = {"after": last, "engine": ENGINE, "limit": 100}
    events = daemon.client.get("/v1/events", params=params).json()["events"]
    exited = next(event_ts(e["ts"]) for e in events if e["type"] == "exited")
    return exited - wall, new_pid, ready


def event_ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def power_off(daemon: BenchDaemon, cluster: LocalCluster, node: str) -> float:
    """The node loses power: agent, engines, raylet. Returns the wall-clock time of it (the
    engines are found first: a scan of every process takes a while on a busy machine)."""
    agent = daemon.nodes()[node]["agent"]
    engines = []
    for process in engine_processes(daemon.home):
        try:
            if process.environ().get("SAGELLM_NODE") == node:
                engines.append(process.pid)
        except psutil.Error:
            pass
    at = time.time()
    os.kill(agent["pid"], signal.SIGKILL)
    for pid in engines:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    cluster.remove_node(node)
    return at


def node_losses(daemon: BenchDaemon, cluster: LocalCluster, runs: int) -> tuple[list, list]:
    """Power off the engine's node `runs` times (a new node joins after each)."""
    lost, ready = [], []
    for run in range(runs):
        entry = daemon.ready()
        gone = entry["node"]
        last = daemon.last_event()
        at = power_off(daemon, cluster, gone)
        lost_at = None
        while lost_at is None:
            params = {"after": last, "wait": 5, "engine": ENGINE}
            body = daemon.client.get("/v1/events", params=params, timeout=60).json()
            lost_at = next((event_ts(e["ts"]) for e in body["events"] if e["type"] == "lost"), None)
            last = body["last_id"]
            if time.time() - at > 120:
                raise SystemExit(f"no lost event 120 s after {gone} was powered off")
        moved = wait_for(ready_off(daemon, gone), 60, f"{ENGINE} ready off {gone}", 0.01)
        lost.append(lost_at - at)
        ready.append(time.time() - at)
        print(
            f"  {gone} off: lost after {lost[-1]:.2f} s, ready on {moved['node']} {ready[-1]:.2f} s"
        )
        spare = f"node-x{run}"
        cluster.add_node(spare)
        wait_for(agent_on(daemon, spare), 30, f"an agent on {spare}", 0.1)
    return lost, ready


def ready_off(daemon: BenchDaemon, gone: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        entry = daemon.entry()
        return entry if entry["state"] == "ready" and entry["node"] != gone else None

    return check


def agent_on(daemon: BenchDaemon, node: str) -> Callable[[], bool]:
    return lambda: bool((daemon.nodes().get(node) or {}).get("agent"))


def line(name: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    shown = sorted(v * scale for v in values)
    return (
        f"  {name:34s} n={len(shown):2d}  median {statistics.median(shown):8.1f} {unit}"
        f"  range {shown[0]:8.1f}-{shown[-1]:.1f} {unit}"
    )


def versus(name: str, base: list[float], other: list[float], unit: str, scale: float) -> None:
    b, o = statistics.median(base) * scale, statistics.median(other) * scale
    print(line(f"{name}, baseline", base, unit, scale))
    print(line(f"{name}, cluster", other, unit, scale))
    print(f"  {'':34s} difference {o - b:+8.1f} {unit}  ratio {o / b:.2f}x")


def daemon_run(home: Path, cluster: LocalCluster | None, kills: int, found: Figures) -> None:
    """One daemon: its start, its RSS, `kills` SIGKILLs of its engine."""
    daemon = BenchDaemon(home, cluster)
    try:
        found["start"].append(daemon.timed_start())
        found["rss"].append(daemon.rss_mib())
        daemon.declare()
        daemon.ready()
        found["rss_ready"].append(daemon.rss_mib())
        for _ in range(kills):
            exited, new_pid, ready = kill_to_restart(daemon)
            found["exited"].append(exited)
            found["pid"].append(new_pid)
            found["ready"].append(ready)
        print(f"  {home.name}: engine on {daemon.entry()['node'] or 'the daemon machine'}")
    finally:
        daemon.close()


def losses(workdir: Path, cluster: LocalCluster, runs: int) -> tuple[list, list]:
    for name in ("node-b", "node-c"):
        if name not in cluster.node_names():
            cluster.add_node(name)
    daemon = BenchDaemon(workdir, cluster)
    try:
        daemon.timed_start()
        daemon.declare()
        return node_losses(daemon, cluster, runs)
    finally:
        daemon.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="daemon starts and node losses")
    parser.add_argument("--kills", type=int, default=3, help="engine SIGKILLs per daemon")
    parser.add_argument("--keep", action="store_true", help="keep the daemons' homes")
    args = parser.parse_args()
    temp_dir = tempfile.mkdtemp(prefix="sgbench", dir="/tmp")
    workdir = Path(temp_dir) / "homes"
    began = time.monotonic()
    keys = ("start", "rss", "rss_ready", "exited", "pid", "ready")
    alone: Figures = {k: [] for k in keys}
    joined: Figures = {k: [] for k in keys}
    try:
        print("cluster: head (no GPUs) + node-b, node-c (2 x 80 GiB simulated, num_gpus=2)")
        cluster = LocalCluster(fast=True, temp_dir=os.path.join(temp_dir, "f"))
        try:
            for name in ("node-b", "node-c"):
                cluster.add_node(name)
            # Alternated, so both see the same load (a shared machine's drifts over a run).
            for run in range(args.runs):
                daemon_run(workdir / f"alone-{run}", None, args.kills, alone)
                daemon_run(workdir / f"cluster-{run}", cluster, args.kills, joined)
            print("node power-off, fast health checks (200 ms x 3, timeout 500 ms):")
            fast = losses(workdir / "loss-fast", cluster, args.runs)
        finally:
            cluster.close()
        print("node power-off, Ray's default health checks:")
        cluster = LocalCluster(fast=False, temp_dir=os.path.join(temp_dir, "d"))
        try:
            default = losses(workdir / "loss-default", cluster, args.runs)
        finally:
            cluster.close()
    finally:
        kill_marked(temp_dir)
        if args.keep:
            print(f"homes kept in {workdir}")
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"\nresults ({time.monotonic() - began:.0f} s in all):")
    print("1. the daemon (baseline: no cluster:; cluster: joined, engine on another node)")
    versus("start to /healthz 200", alone["start"], joined["start"], "ms", 1000)
    versus("RSS after start", alone["rss"], joined["rss"], "MiB", 1)
    versus("RSS, one engine ready", alone["rss_ready"], joined["rss_ready"], "MiB", 1)
    print("2. engine SIGKILL (baseline: on the daemon's machine; cluster: on another node)")
    versus("to the daemon's exited event", alone["exited"], joined["exited"], "ms", 1000)
    versus("to its new pid", alone["pid"], joined["pid"], "ms", 1000)
    versus("to ready", alone["ready"], joined["ready"], "ms", 1000)
    print("3. node power-off (fast: 200 ms x 3 health checks; default: Ray's)")
    print(line("to lost, fast", fast[0], "s"))
    print(line("to ready elsewhere, fast", fast[1], "s"))
    print(line("to lost, default", default[0], "s"))
    print(line("to ready elsewhere, default", default[1], "s"))
    ratio = statistics.median(default[1]) / statistics.median(fast[1])
    print(f"  {'':34s} default / fast, to ready: {ratio:.1f}x")


if __name__ == "__main__":
    main()
