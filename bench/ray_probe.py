"""What Ray costs and how fast it tells things on this machine (docs/multi-node.md, issue 17).

Ray is not a dependency of sagellm: run this in a venv of its own.

    python3 -m venv /tmp/ray-probe-venv
    /tmp/ray-probe-venv/bin/pip install ray==2.60.0 psutil
    /tmp/ray-probe-venv/bin/python bench/ray_probe.py            # every phase, ~2 minutes
    /tmp/ray-probe-venv/bin/python bench/ray_probe.py --phase import

Phases (each in a fresh interpreter, so one's memory or Ray session does not leak into the
next): `import` (time and RSS of `import ray`), `head` (a head started as a user would,
`ray start --head`, its processes' memory, and what `ray.init(address=...)` adds to a
driver such as the daemon), `cluster` (a `ray.cluster_utils.Cluster` of a head and two
nodes with logical GPUs and labels; one detached, named agent actor per node pinned with
NodeAffinitySchedulingStrategy that spawns a child and reports its exit through pidfd; a new
driver finds the agents by name; a STRICT_SPREAD placement group; how long after
`remove_node` the node shows dead), run twice: Ray's default health checks and faster ones.
Every Ray process a phase starts is killed by pid before it ends; a Ray temp dir of its own
under /tmp keeps it apart from any other Ray on the box.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def uss_mib(pid: int) -> float:
    """Memory only this process holds (shared libraries counted once, elsewhere)."""
    import psutil

    try:
        return psutil.Process(pid).memory_full_info().uss / MIB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def ray_processes(marker: str) -> list[dict]:
    """Every process whose command line names `marker` (this phase's Ray temp dir), and
    their descendants (Ray's agents rename themselves ray::DashboardAgent and lose it)."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and marker in " ".join(process.info["cmdline"] or []):
            found[process.pid] = process
            try:
                found.update((child.pid, child) for child in process.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    described = []
    for pid, process in sorted(found.items()):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            described.append(
                {"pid": pid, "name": process.name(), "cmdline": " ".join(process.cmdline())}
            )
        except psutil.NoSuchProcess:
            continue
    return described


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def describe_memory(processes: list[dict]) -> dict[str, dict[str, float]]:
    """RSS and USS in MiB by process kind (gcs_server, raylet, workers ...)."""
    kinds: dict[str, dict[str, float]] = {}
    for process in processes:
        name = process["name"]
        if name.startswith("python"):  # Ray's Python services, by their script
            script = next((p for p in process["cmdline"].split() if p.endswith(".py")), "")
            name = Path(script).stem or "python"
            if name == "default_worker":
                name = "python worker"
        try:
            rss = rss_mib(process["pid"])
        except (FileNotFoundError, StopIteration):
            continue
        entry = kinds.setdefault(name, {"count": 0, "rss_mib": 0.0, "uss_mib": 0.0})
        entry["count"] += 1
        entry["rss_mib"] = round(entry["rss_mib"] + rss, 1)
        entry["uss_mib"] = round(entry["uss_mib"] + uss_mib(process["pid"]), 1)
    return kinds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- phase: import


def phase_import() -> dict:
    before = rss_mib()
    started = time.perf_counter()
    import ray

    return {
        "ray_version": ray.__version__,
        "import_s": round(time.perf_counter() - started, 3),
        "rss_before_mib": round(before, 1),
        "rss_added_mib": round(rss_mib() - before, 1),
    }


# ---------------------------------------------------------------- phase: head


def phase_head(temp_dir: str) -> dict:
    """A head as a user starts one, then what connecting to it costs a driver."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    started = time.perf_counter()
    subprocess.run(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0"]
        + ["--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        check=True,
        capture_output=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    head_start_s = time.perf_counter() - started
    time.sleep(2)  # let the prestarted workers settle before measuring them
    head_memory = describe_memory(ray_processes(temp_dir))
    try:
        import ray

        before = rss_mib()
        started = time.perf_counter()
        ray.init(address=f"127.0.0.1:{port}", namespace="sagellm", log_to_driver=False)
        connect_s = time.perf_counter() - started
        connected_rss = rss_mib() - before
        started = time.perf_counter()
        nodes = ray.nodes()
        nodes_call_ms = (time.perf_counter() - started) * 1000
        ray.shutdown()
    finally:
        kill_pids([process["pid"] for process in ray_processes(temp_dir)])
    return {
        "ray_start_head_s": round(head_start_s, 2),
        "head_processes": head_memory,
        "head_rss_total_mib": round(sum(k["rss_mib"] for k in head_memory.values()), 1),
        "head_uss_total_mib": round(sum(k["uss_mib"] for k in head_memory.values()), 1),
        "driver_connect_s": round(connect_s, 2),
        "driver_rss_added_by_connect_mib": round(connected_rss, 1),
        "ray_nodes_call_ms": round(nodes_call_ms, 1),
        "nodes": len(nodes),
    }


# ---------------------------------------------------------------- phase: cluster


class ProbeAgent:
    """Stands in for sagellm's node agent: hosts children, reports their exits (pidfd).

    Plain here; `ray.remote` makes it an actor in phase_cluster (Ray pickles a class of
    __main__ by value, so the workers need not import this file)."""

    def __init__(self) -> None:
        import asyncio

        self.exits: asyncio.Queue = asyncio.Queue()
        self.children: dict[int, subprocess.Popen] = {}

    def info(self) -> dict:
        import ray

        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "labels": context.get_node_labels(),
            "pid": os.getpid(),
            "children": sorted(self.children),
        }

    async def spawn(self, argv: list[str]) -> int:
        import asyncio

        child = subprocess.Popen(argv, start_new_session=True)
        fd = os.pidfd_open(child.pid)
        self.children[child.pid] = child
        asyncio.get_running_loop().add_reader(fd, self._exited, child.pid, fd)
        return child.pid

    def _exited(self, pid: int, fd: int) -> None:
        import asyncio

        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        code = self.children.pop(pid).wait()
        self.exits.put_nowait({"pid": pid, "returncode": code, "at": time.time()})

    async def next_exit(self) -> dict:
        return await self.exits.get()

    async def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _agent_class():
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(ProbeAgent)


def _agent(agent_class, node_id: str, name: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return agent_class.options(
        name=name,
        namespace="sagellm",
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()


def _exit_latencies(agent, ray, count: int = 5) -> list[float]:
    """SIGKILL a child the agent hosts; ms until its exit report reaches this driver."""
    latencies = []
    for _ in range(count):
        pid = ray.get(agent.spawn.remote(["sleep", "600"]))
        pending = agent.next_exit.remote()
        time.sleep(0.2)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        report = ray.get(pending, timeout=10)
        latencies.append((time.time() - killed_at) * 1000)
        assert report["pid"] == pid and report["returncode"] == -9, report
    return latencies


def driver_restart(mode: str, address: str, node_id: str) -> dict:
    """A daemon restart: one driver process creates a detached agent and a child, then
    exits; a second one finds the agent by name and its child still running."""
    import ray

    started = time.perf_counter()
    ray.init(address=address, namespace="sagellm", log_to_driver=False)
    connected = time.perf_counter()
    if mode == "create":
        agent = _agent(_agent_class(), node_id, "agent-restart")
        return {"child": ray.get(agent.spawn.remote(["sleep", "600"]))}
    agent = ray.get_actor("agent-restart")
    info = ray.get(agent.info.remote())
    found = time.perf_counter()
    alive = all(ray.get(agent.alive.remote(pid)) for pid in info["children"])
    return {
        "connect_s": connected - started,
        "found_ms": (found - connected) * 1000,
        "children": info["children"],
        "child_alive": alive,
    }


def _other_driver(mode: str, address: str, node_id: str) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, "--driver", mode, address, node_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def phase_cluster(temp_dir: str, fast: bool) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group, placement_group_table

    config = FAST_HEALTH_CHECKS if fast else {}
    result: dict = {"health_checks": config or "Ray defaults"}
    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "labels": {"sagellm.node": "head"},
            "temp_dir": os.path.join(temp_dir, "ray"),
            "include_dashboard": False,
            "_system_config": config,
        },
    )
    result["head_start_s"] = round(time.perf_counter() - started, 2)
    try:
        nodes = {}
        for name in ("node-b", "node-c"):
            started = time.perf_counter()
            nodes[name] = cluster.add_node(
                num_cpus=1,
                num_gpus=2,
                labels={"sagellm.node": name, "sagellm.gpus": "simulate:2x80"},
            )
            result[f"add_{name}_s"] = round(time.perf_counter() - started, 2)
        ray.init(address=cluster.address, namespace="sagellm", log_to_driver=False)
        by_label = {
            node["Labels"].get("sagellm.node"): node for node in ray.nodes() if node["Alive"]
        }
        result["nodes"] = {
            name: {
                "address": node["NodeManagerAddress"],
                "GPU": node["Resources"].get("GPU", 0),
                "labels": {k: v for k, v in node["Labels"].items() if k.startswith("sagellm")},
            }
            for name, node in by_label.items()
        }
        agent_class = _agent_class()
        agents = {}
        for name in ("node-b", "node-c"):
            started = time.perf_counter()
            agents[name] = _agent(agent_class, by_label[name]["NodeID"], f"agent-{name}")
            info = ray.get(agents[name].info.remote())
            result[f"agent_{name}_create_s"] = round(time.perf_counter() - started, 2)
            assert info["node_id"] == by_label[name]["NodeID"], info
            assert info["labels"]["sagellm.node"] == name, info
            result[f"agent_{name}_rss_mib"] = round(rss_mib(info["pid"]), 1)
            result[f"agent_{name}_uss_mib"] = round(uss_mib(info["pid"]), 1)
        again = _agent(agent_class, by_label["node-b"]["NodeID"], "agent-node-b")
        result["get_if_exists_same_actor"] = again._actor_id == agents["node-b"]._actor_id
        latencies = _exit_latencies(agents["node-c"], ray)
        result["exit_report_ms"] = {
            "median": round(statistics.median(latencies), 1),
            "max": round(max(latencies), 1),
        }
        # A daemon restart: a driver that creates an agent and exits, then a new one.
        node_b = by_label["node-b"]["NodeID"]
        survivor = _other_driver("create", cluster.address, node_b)["child"]
        found = _other_driver("find", cluster.address, node_b)
        result["new_driver"] = {
            "connect_s": round(found["connect_s"], 2),
            "get_actor_and_call_ms": round(found["found_ms"], 1),
            "child_still_there": found["children"] == [survivor] and found["child_alive"],
        }
        started = time.perf_counter()
        group = placement_group([{"GPU": 1}, {"GPU": 1}], strategy="STRICT_SPREAD")
        ready = ray.get(group.ready(), timeout=30)
        table = placement_group_table(group)
        spread = {b: n[:8] for b, n in table["bundles_to_node_id"].items()}
        result["placement_group"] = {
            "ready_ms": round((time.perf_counter() - started) * 1000, 1),
            "ok": bool(ready),
            "bundles_to_node": spread,
            "distinct_nodes": len(set(spread.values())),
        }
        # Bundles pinned to the nodes the planner chose, by their sagellm.node label.
        pinned = placement_group(
            [{"GPU": 1}, {"GPU": 1}],
            strategy="PACK",
            bundle_label_selector=[{"sagellm.node": "node-c"}, {"sagellm.node": "node-b"}],
        )
        ray.get(pinned.ready(), timeout=30)
        where = placement_group_table(pinned)["bundles_to_node_id"]
        names = {node["NodeID"]: name for name, node in by_label.items()}
        result["label_pinned_group"] = {str(b): names[n] for b, n in where.items()}
        result["node_death"] = _node_death(ray, cluster, nodes["node-c"], by_label, agents)
        kill_pids([survivor])
    finally:
        ray.shutdown()
        mine = ray_processes(temp_dir)
        kill_pids([process["pid"] for process in mine])
        cluster.shutdown()
    return result


def _node_death(ray, cluster, node, by_label: dict, agents: dict) -> dict:
    """Kill node-c's raylet and workers (SIGKILL); time until Ray says so, three ways."""
    node_id = by_label["node-c"]["NodeID"]
    pending = agents["node-c"].next_exit.remote()  # the daemon's long-poll on the agent
    killed_at = time.perf_counter()
    cluster.remove_node(node, allow_graceful=False)
    removed_s = time.perf_counter() - killed_at
    call_failed_s = name_freed_s = node_dead_s = None
    error = ""
    while time.perf_counter() - killed_at < 120 and None in (call_failed_s, node_dead_s):
        now = time.perf_counter() - killed_at
        if call_failed_s is None:
            done, _ = ray.wait([pending], timeout=0)
            if done:
                try:
                    ray.get(done[0])
                except Exception as exc:  # the agent's death, whatever class Ray gives it
                    error = type(exc).__name__
                call_failed_s = now
        if node_dead_s is None and not any(
            n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()
        ):
            node_dead_s = now
        time.sleep(0.05)
    while time.perf_counter() - killed_at < 120:
        try:
            ray.get_actor("agent-node-c")
        except ValueError:
            name_freed_s = time.perf_counter() - killed_at
            break
        time.sleep(0.05)
    return {
        "remove_node_call_s": round(removed_s, 2),
        "pending_agent_call_failed_s": None if call_failed_s is None else round(call_failed_s, 2),
        "pending_call_error": error,
        "ray_nodes_shows_dead_s": None if node_dead_s is None else round(node_dead_s, 2),
        "agent_name_freed_s": None if name_freed_s is None else round(name_freed_s, 2),
    }


# ---------------------------------------------------------------- driver


def run_phase(name: str, *extra: str) -> dict:
    temp_dir = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--phase", name, "--temp-dir", temp_dir, *extra],
            capture_output=True,
            text=True,
            timeout=600,
            # RAY_TMPDIR: where Cluster writes ray_current_cluster (else /tmp/ray, shared).
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": temp_dir},
        )
        if child.returncode != 0:
            return {"error": child.stderr[-3000:]}
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        leftovers = ray_processes(temp_dir)
        kill_pids([process["pid"] for process in leftovers])
        shutil.rmtree(temp_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["import", "head", "cluster", "cluster-fast"])
    parser.add_argument("--temp-dir")
    parser.add_argument("--driver", nargs=3, metavar=("MODE", "ADDRESS", "NODE_ID"))
    args = parser.parse_args()
    if args.driver:  # the two drivers of the daemon-restart figure
        print(json.dumps(driver_restart(*args.driver)))
        return
    if args.temp_dir:  # inside a phase's own interpreter
        if args.phase == "import":
            figures = phase_import()
        elif args.phase == "head":
            figures = phase_head(args.temp_dir)
        else:
            figures = phase_cluster(args.temp_dir, fast=args.phase == "cluster-fast")
        print(json.dumps(figures))
        return
    phases = [args.phase] if args.phase else ["import", "head", "cluster", "cluster-fast"]
    for phase in phases:
        if phase == "import":
            runs = [run_phase("import") for _ in range(3)]
            if any("error" in run for run in runs):
                print(json.dumps({"import": runs}, indent=2))
                continue
            figures = {
                "ray_version": runs[0]["ray_version"],
                "import_s_runs": [run["import_s"] for run in runs],
                "rss_added_mib_runs": [run["rss_added_mib"] for run in runs],
            }
        else:
            figures = run_phase(phase)
        print(json.dumps({phase: figures}, indent=2), flush=True)


if __name__ == "__main__":
    main()
