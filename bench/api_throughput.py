"""API throughput of sagellmd with 50 engines: `GET /v1/status`, durable `PUT /v1/engines/{id}`.

Run: .venv/bin/python bench/api_throughput.py [--engines 50] [--seconds 5] [--clients 8]

A real sagellmd (the integration tests' `Daemon`) runs the stand-in vLLM engine; each of
the engines reserves 1 GiB on one of two simulated 80 GiB GPUs. Once every engine is ready:

* `GET /v1/status` (the full document, every engine) from one keep-alive client for
  `--seconds`, then from `--clients` concurrent keep-alive clients;
* `PUT /v1/engines/{id}` with a label-only change, the same two ways. The label is not
  part of the spec hash, so nothing restarts (checked at the end); every answer means the
  new generation is committed to SQLite in WAL mode with synchronous=FULL (fsync'd), so
  this is the rate of durable desired-state changes.

Clients are threads with one httpx connection each: the daemon is one Python process and
the machine may have few CPUs, so the figures are for this machine (printed at the top).

A p50 near 40-50 ms for one client, even for tiny answers, is not the work of a request:
the daemon's API socket is created without TCP_NODELAY taking effect (asyncio sets it only
on sockets whose proto is IPPROTO_TCP; `bind_api_socket` makes one with proto 0), so each
answer, written as headers then body, waits out the client's delayed ACK.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.conftest import Daemon, base_config, engine_processes  # noqa: E402


@dataclass
class Run:
    """Latencies (seconds) of the requests of one measurement and its wall time."""

    latencies: list[float]
    wall_s: float
    errors: int

    def line(self, name: str) -> str:
        ms = sorted(value * 1000 for value in self.latencies)
        rate = len(ms) / self.wall_s if self.wall_s else 0.0
        return (
            f"{name:44s} n={len(ms):6d}  {rate:8.1f} req/s  p50={percentile(ms, 0.5):7.2f} ms"
            f"  p95={percentile(ms, 0.95):7.2f} ms  p99={percentile(ms, 0.99):7.2f} ms"
            f"  max={ms[-1] if ms else 0:7.2f} ms  errors={self.errors}"
        )


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


Request = Callable[[httpx.Client, int, int], httpx.Response]


def measure(url: str, clients: int, seconds: float, request: Request) -> Run:
    """`clients` threads, each on its own keep-alive connection, calling `request` until
    `seconds` have passed. `request(client, worker, i)` must answer 2xx."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            request(client, index, -1)  # warm the connection outside the measurement
            start.wait()
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                response = request(client, index, i)
                latencies[index].append(time.perf_counter() - began)
                if not response.is_success:
                    errors[index] += 1
                i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return Run([v for per in latencies for v in per], time.perf_counter() - began, sum(errors))


def wrk_rate(url: str, connections: int, seconds: float) -> str | None:
    """`wrk` (Debian's package) on `url`: a C load generator, so the daemon is what is
    measured, not Python client threads competing with it for two CPUs. None without wrk."""
    if shutil.which("wrk") is None:
        return None
    threads = min(connections, 2)
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = next(line for line in result.stdout.splitlines() if line.startswith("Requests/sec"))
    p50 = next(
        (line.split()[1] for line in result.stdout.splitlines() if line.strip().startswith("50%")),
        "?",
    )
    errors = [
        line.strip() for line in result.stdout.splitlines() if "Non-2xx" in line or "errors" in line
    ]
    return f"{float(rate.split()[1]):8.1f} req/s  p50={p50}" + (
        f"  {'; '.join(errors)}" if errors else ""
    )


def filesystem(path: Path) -> str:
    """The mount (and its type) that holds `path`: fsync on tmpfs would be free."""
    best = ("?", "?")
    best_len = -1
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _device, mount, kind, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > best_len:
                best, best_len = (mount, kind), len(mount)
    return f"{best[1]} (mounted on {best[0]})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the daemon's home goes (default: a temp dir)"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sagellm-bench-", dir=args.dir)) / "home"
    # The daemon's default probe intervals (the test config probes every 0.5 s, which
    # with 50 engines would be 100 probes a second competing with the API).
    config = base_config(probes={"liveness_interval_s": 5.0, "liveness_failures": 3})
    # Enough ports for every engine (the test config reserves 100).
    config["ports"] = {"start": config["ports"]["start"], "end": config["ports"]["start"] + 999}
    daemon = Daemon(home, config)
    daemon.extra_env["SAGELLM_LOG_LEVEL"] = "info"  # debug logging is not what runs in prod
    ids = [f"bench-{n:02d}" for n in range(args.engines)]
    spec = {"kind": "llm", "model": "fake/bench-1B", "gpu_memory_gb": 1}
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f};"
        f" home on {filesystem(home)}"
    )
    daemon.start()
    try:
        began = time.monotonic()
        for engine_id in ids:
            answer = daemon.put(f"/v1/engines/{engine_id}", spec)
            assert answer.status_code in (200, 201), answer.text

        def all_ready() -> dict | None:
            status = daemon.get("/v1/status").json()
            engines = status["engines"]
            ready = [e for e in engines if e["state"] == "ready"]
            return status if len(ready) == len(ids) == len(engines) else None

        status = daemon.wait_for(all_ready, 300, f"{len(ids)} engines ready")
        body = daemon.get("/v1/status").content
        print(
            f"{len(ids)} engines ready in {time.monotonic() - began:.1f} s"
            f" (generation {status['generation']}); /v1/status is {len(body) / 1024:.0f} KiB"
        )
        pids = {e["id"]: e["pid"] for e in status["engines"]}

        def get_status(client: httpx.Client, _worker: int, _i: int) -> httpx.Response:
            return client.get("/v1/status")

        auth = daemon.auth()
        puts = [0]
        lock = threading.Lock()

        def put_label(client: httpx.Client, worker: int, i: int) -> httpx.Response:
            # Round-robin over the engines; each label is new, so each PUT is a change.
            engine_id = ids[(worker * 7 + i) % len(ids)]
            label = f"w{worker}-{i}-{time.perf_counter_ns()}"
            response = client.put(
                f"/v1/engines/{engine_id}", json={**spec, "label": label}, headers=auth
            )
            if i >= 0 and response.is_success:
                with lock:
                    puts[0] += 1
            return response

        generation_before = daemon.get("/v1/status").json()["generation"]
        results = [
            ("GET /v1/status, 1 client", measure(daemon.url, 1, args.seconds, get_status)),
            (
                f"GET /v1/status, {args.clients} clients",
                measure(daemon.url, args.clients, args.seconds, get_status),
            ),
        ]
        # The warm-up PUTs (one per worker, i = -1) are changes too: count them apart.
        warmups = 1 + args.clients
        results.append(
            (
                "PUT /v1/engines/{id} durable, 1 client",
                measure(daemon.url, 1, args.seconds, put_label),
            )
        )
        results.append(
            (
                f"PUT /v1/engines/{{id}} durable, {args.clients} clients",
                measure(daemon.url, args.clients, args.seconds, put_label),
            )
        )
        for name, run in results:
            print(run.line(name))
        for connections in (1, args.clients):
            rate = wrk_rate(f"{daemon.url}/v1/status", connections, args.seconds)
            label = f"GET /v1/status, wrk, {connections} connection{'s' if connections > 1 else ''}"
            print(f"{label:44s} {rate}" if rate else f"{label:44s} (wrk not installed)")

        # Every answered PUT made a generation, and none of them restarted an engine.
        final = daemon.get("/v1/status").json()
        made = final["generation"] - generation_before
        restarted = [
            e["id"] for e in final["engines"] if e["pid"] != pids[e["id"]] or e["restarts"]
        ]
        print(
            f"check: {made} generations for {puts[0]} measured + {warmups} warm-up PUTs;"
            f" engines restarted by label changes: {len(restarted)}"
        )
        for engine_id in restarted:
            for event in daemon.events(engine_id)[-4:]:
                print(f"  {engine_id}: {event['type']} {event['message']}")
        if made != puts[0] + warmups or restarted:
            raise SystemExit(f"unexpected: generations {made}, restarted {restarted}")
    finally:
        daemon.stop(timeout=30)
        daemon.cleanup()  # SIGKILLs every engine of this home (the daemon leaves them)
        # A killed process is listed until it is reaped; give that a bounded moment.
        deadline = time.monotonic() + 10
        while engine_processes(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"daemon stopped; engine processes left: {len(engine_processes(home))}")


if __name__ == "__main__":
    main()
