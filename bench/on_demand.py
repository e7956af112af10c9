"""Engines on demand: what the daemon and the gateway add to a cold start and to a wake.

Run: .venv/bin/python bench/on_demand.py [--starts 20] [--wake-s 0.5] [--evict]

A real sagellmd with its gateway (the integration tests' `Daemon`) runs the stand-in vLLM
engine (tests/fixtures/fake_vllm.py). Measured in one run, 20 times each:

* baseline, cold: the stand-in alone, spawned by this script as the daemon spawns it, from
  the spawn to the first `data:` line of a streamed chat answer from it (a tight poll of its
  port: no probe interval); each right before one on-demand cold start, so both see the
  same load (on a shared machine it drifts over a run);
* on demand, cold: a streamed chat request through the gateway for an on-demand engine that
  is `idle` (never started), from sending it to the first `data:` line of the answer (the
  gateway's `: loading` comments before it do not count); 20 engines, one request each;
* baseline, wake: the stand-in asleep (`POST /sleep?level=1`), from `POST /wake_up` to the
  first `data:` line of an answer (it takes `--wake-s` seconds to wake: FAKE_VLLM_WAKE_S);
  each right before one on-demand wake;
* on demand, wake: one engine with `idle_action: sleep`, `idle_s: 1`, asleep, from a request
  through the gateway to its first `data:` line; 20 times (it falls asleep in between).

The overhead is the on-demand time minus the baseline median (the stand-in's own startup or
wake), and also paired (each measurement minus the baseline taken just before it): what the
daemon (demand in the gateway's report, the plan, the spawn, the startup probe every
`probes.startup_probe_interval_s`, the route table) and the gateway (holding the request,
dispatching it) add. Targets: overhead p50 < 100 ms, p95 < 300 ms. The daemon probes a
starting engine at once and then every `startup_probe_interval_s` (0.25 s): a stand-in up in
0.1-0.2 s is seen by the second probe, so most of the cold overhead is that interval;
`--probe-interval 0.05` shows what is left.
`--evict` also runs bench/eviction.py (the eviction decision, 50 engines on 8 GPUs).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import (  # noqa: E402
    FAKE_VLLM,
    Daemon,
    base_config,
    engine_processes,
    free_port,
)

MODEL = "fake/bench-1B"
TARGET_P50_MS = 100.0
TARGET_P95_MS = 300.0
SLEEP_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"{name:38s} n={len(ms):3d}  p50={statistics.median(ms):8.1f} ms"
        f"  p95={percentile(ms, 0.95):8.1f} ms  min={ms[0]:8.1f} ms  max={ms[-1]:8.1f} ms"
    )


def time_to_first_data(url: str, model: str) -> float:
    """Seconds from sending the request to the first `data:` line of its answer."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    began = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as answer:
        if answer.status_code != 200:
            raise SystemExit(f"{model}: HTTP {answer.status_code}: {answer.read()[:300]!r}")
        first: float | None = None
        for line in answer.iter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter()
    if first is None:
        raise SystemExit(f"{model}: the answer had no data line")
    return first - began


def poll_first_data(url: str, deadline_s: float = 60.0) -> float:
    """The moment (perf_counter) a streamed answer's first `data:` line arrives, asking again
    every 2 ms while the stand-in does not listen or answers 503 (starting, asleep)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    deadline = time.perf_counter() + deadline_s
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() < deadline:
            try:
                with client.stream("POST", f"{url}/v1/chat/completions", json=body) as answer:
                    if answer.status_code == 200:
                        at: float | None = None
                        for line in answer.iter_lines():
                            if at is None and line.startswith("data:"):
                                at = time.perf_counter()
                        if at is not None:
                            return at
                    else:
                        answer.read()
            except httpx.TransportError:
                pass
            time.sleep(0.002)
    raise SystemExit(f"the stand-in at {url} gave no answer within {deadline_s:g} s")


def spawn_stand_in(port: int, env: dict[str, str], extra: list[str]) -> subprocess.Popen[bytes]:
    # The argv the daemon gives a vllm engine (runtimes.vllm = the stand-in).
    command = [sys.executable, str(FAKE_VLLM), "--model", MODEL, "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port), "--max-num-seqs", "256", *extra],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(10)


def baseline_cold_once() -> float:
    port = free_port()
    began = time.perf_counter()
    process = spawn_stand_in(port, {}, [])
    try:
        return poll_first_data(f"http://127.0.0.1:{port}") - began
    finally:
        stop(process)


class SleepyStandIn:
    """The stand-in alone with sleep mode on, put to sleep and woken by this script."""

    def __init__(self, wake_s: float) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**SLEEP_ENV, "FAKE_VLLM_WAKE_S": str(wake_s)}
        self.process = spawn_stand_in(int(self.url.rsplit(":", 1)[1]), env, ["--enable-sleep-mode"])
        self.client = httpx.Client(base_url=self.url, timeout=60)
        poll_first_data(self.url)

    def wake_once(self) -> float:
        self.client.post("/sleep", params={"level": 1}).raise_for_status()
        began = time.perf_counter()
        self.client.post("/wake_up").raise_for_status()
        return poll_first_data(self.url) - began

    def close(self) -> None:
        self.client.close()
        stop(self.process)


def wait_state(daemon: Daemon, engine_ids: list[str], state: str, timeout: float = 120) -> None:
    def there() -> bool:
        engines = {e["id"]: e for e in daemon.get("/v1/engines").json()["engines"]}
        return all(engines.get(i, {}).get("state") == state for i in engine_ids)

    daemon.wait_for(there, timeout, f"{len(engine_ids)} engine(s) {state}")


def routed(gateway: str, names: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            models = httpx.get(f"{gateway}/v1/models", timeout=5).json()["data"]
        except (httpx.TransportError, ValueError, KeyError):
            return False
        known = {name for m in models for name in m["names"]}
        return set(names) <= known

    return check


def declare(daemon: Daemon, engine_ids: list[str], spec: dict[str, Any]) -> None:
    for engine_id in engine_ids:
        answer = daemon.put(f"/v1/engines/{engine_id}", spec)
        if answer.status_code not in (200, 201):
            raise SystemExit(f"PUT {engine_id}: {answer.status_code} {answer.text}")


def on_demand_cold(daemon: Daemon, gateway: str, starts: int) -> tuple[list[float], list[float]]:
    """Cold starts through the daemon, each right after a baseline spawn of the stand-in,
    so both see the same machine (the load of a shared machine drifts over a run)."""
    ids = [f"cold-{n:02d}" for n in range(starts)]
    declare(daemon, ids, {"model": MODEL, "start": "on-demand", "gpu_memory_gb": 1})
    wait_state(daemon, ids, "idle")
    daemon.wait_for(routed(gateway, ids), 30, "the gateway to route the cold engines")
    base, times = [], []
    for engine_id in ids:
        base.append(baseline_cold_once())
        times.append(time_to_first_data(gateway, engine_id))
        # Stop it again, so the next start has the machine to itself as the baseline had.
        daemon.delete(f"/v1/engines/{engine_id}")
    return base, times


def on_demand_wake(
    daemon: Daemon, gateway: str, starts: int, wake_s: float
) -> tuple[list[float], list[float]]:
    """Wakes through the daemon, each right after a baseline wake of a stand-in of its own."""
    engine_id = "wake"
    spec = {
        "model": MODEL,
        "start": "on-demand",
        "idle_s": 1,
        "idle_action": "sleep",
        "gpu_memory_gb": 1,
        "env": {"FAKE_VLLM_WAKE_S": str(wake_s)},
    }
    declare(daemon, [engine_id], spec)
    wait_state(daemon, [engine_id], "idle")
    daemon.wait_for(routed(gateway, [engine_id]), 30, "the gateway to route the wake engine")
    time_to_first_data(gateway, engine_id)  # the first start: a cold one, not measured
    alone = SleepyStandIn(wake_s)
    base, times = [], []
    try:
        for _ in range(starts):
            wait_state(daemon, [engine_id], "idle")  # asleep again after idle_s
            base.append(alone.wake_once())
            times.append(time_to_first_data(gateway, engine_id))
    finally:
        alone.close()
    sleep = httpx.get(f"http://127.0.0.1:{daemon.engine(engine_id)['port']}/fake/stats").json()
    wakes = sleep["sleep"]["wakes"]
    if wakes < starts:
        raise SystemExit(f"the engine woke {wakes} times for {starts} measured requests")
    return base, times


def verdict(name: str, measured: list[float], baseline: list[float]) -> list[str]:
    """Overhead as the on-demand figures minus the baseline median, and paired (each
    measurement minus the baseline taken right before it)."""
    base = statistics.median(baseline) * 1000
    ms = sorted(s * 1000 for s in measured)
    p50, p95 = statistics.median(ms) - base, percentile(ms, 0.95) - base
    paired = sorted((m - b) * 1000 for m, b in zip(measured, baseline, strict=True))
    marks = (
        "ok" if p50 < TARGET_P50_MS else "MISSED",
        "ok" if p95 < TARGET_P95_MS else "MISSED",
    )
    ratio = statistics.median(ms) / base if base else float("inf")
    return [
        f"  {name} overhead: p50 {p50:7.1f} ms (target < {TARGET_P50_MS:g}: {marks[0]}),"
        f" p95 {p95:7.1f} ms (target < {TARGET_P95_MS:g}: {marks[1]});"
        f" {ratio:.2f}x the stand-in's own time",
        f"  {name} overhead, paired: p50 {statistics.median(paired):7.1f} ms,"
        f" p95 {percentile(paired, 0.95):7.1f} ms, min {paired[0]:7.1f} ms",
    ]


def run_eviction_bench() -> None:
    path = ROOT / "bench" / "eviction.py"
    spec = importlib.util.spec_from_file_location("bench_eviction", path)
    if spec is None or spec.loader is None or not path.exists():
        print("bench/eviction.py is not here: no eviction figures")
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=20, help="cold starts and wakes each")
    parser.add_argument("--wake-s", type=float, default=0.5, help="the stand-in's wake time")
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=None,
        help="probes.startup_probe_interval_s (default: the daemon's, 0.25 s)",
    )
    parser.add_argument("--evict", action="store_true", help="also run bench/eviction.py")
    parser.add_argument("--dir", type=Path, default=None, help="where the daemon's home goes")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.evict:
        run_eviction_bench()

    home = Path(tempfile.mkdtemp(prefix="sagellm-bench-", dir=args.dir)) / "home"
    probes: dict[str, Any] = {"liveness_interval_s": 5.0, "liveness_failures": 3}
    if args.probe_interval is not None:
        probes["startup_probe_interval_s"] = args.probe_interval
    gateway_port = free_port()
    config = base_config(probes=probes, gateway={"enabled": True, "port": gateway_port})
    daemon = Daemon(home, config)
    daemon.extra_env["SAGELLM_LOG_LEVEL"] = "info"  # debug logging is not what runs in prod
    gateway = f"http://127.0.0.1:{gateway_port}"
    daemon.start()
    try:
        daemon.wait_for(routed(gateway, []), 30, "the gateway")
        cold_base, cold = on_demand_cold(daemon, gateway, args.starts)
        wake_base, wake = on_demand_wake(daemon, gateway, args.starts, args.wake_s)
    finally:
        daemon.stop(timeout=30)
        daemon.cleanup()
        deadline = time.monotonic() + 10
        while engine_processes(home) and time.monotonic() < deadline:
            time.sleep(0.1)
    interval = args.probe_interval if args.probe_interval is not None else 0.25
    print(f"startup probe every {interval:g} s; the stand-in wakes in {args.wake_s:g} s")
    print(figures("baseline: stand-in spawn -> first data", cold_base))
    print(figures("on demand: idle -> first data", cold))
    print(figures("baseline: stand-in wake -> first data", wake_base))
    print(figures("on demand: asleep -> first data", wake))
    for line in verdict("cold start", cold, cold_base) + verdict("wake", wake, wake_base):
        print(line)
    print(f"daemon stopped; engine processes left: {len(engine_processes(home))}")


if __name__ == "__main__":
    main()
