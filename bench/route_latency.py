"""How fast the gateway stops routing to an engine that died: SIGKILL -> route table -> gateway.

Run: .venv/bin/python bench/route_latency.py [--rounds 15]

A real sagellmd (the integration tests' `Daemon`, temp home, free ports) runs one stand-in
vLLM engine and the gateway. Each round waits until the gateway routes to the engine, starts
a long-poll of `GET /v1/routes` of its own (as the gateway does), SIGKILLs the engine and
measures:

* SIGKILL -> the daemon answers the long-poll with the engine not ready (exit detection by
  pidfd, the SQLite record of the exit, the route table rebuilt);
* that answer -> the gateway's `GET /v1/models` shows the engine not ready (the gateway's own
  long-poll answered, parsed and applied; includes this script's polling of the gateway).

The issue's target is the second figure: the gateway learns of an exit within 50 ms of the
daemon's event.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.conftest import Daemon, base_config, free_port  # noqa: E402


def _engine_ready(gateway: str) -> bool:
    try:
        data = httpx.get(f"{gateway}/v1/models", timeout=5).json()["data"]
    except (httpx.TransportError, ValueError, KeyError):
        return False
    return bool(data) and data[0]["engines"][0]["state"] == "ready"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sagellm-route-latency-"))
    gateway_port = free_port()
    config = base_config(
        gateway={"enabled": True, "port": gateway_port},
        restart={"backoff_base_s": 0.1, "backoff_max_s": 0.3, "reset_after_s": 600},
        rollout={"min_healthy_s": 0.2},
    )
    daemon = Daemon(home, config)
    gateway = f"http://127.0.0.1:{gateway_port}"
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} rounds={args.rounds}")
    try:
        daemon.start()
        assert daemon.put("/v1/engines/e", {"kind": "llm", "model": "fake/m-1B"}).status_code in (
            200,
            201,
        )
        time.sleep(1.0)  # past min_healthy_s: a kill now is a crash, not a failed change
        to_table, to_gateway = [], []
        for _ in range(args.rounds):
            daemon.wait_for(lambda: _engine_ready(gateway), 30, "the gateway to route to e")
            version = daemon.get("/v1/routes", headers=daemon.auth()).json()["version"]
            answered: dict[str, float] = {}

            def poll(version: int = version, answered: dict[str, float] = answered) -> None:
                daemon.get(
                    "/v1/routes",
                    headers=daemon.auth(),
                    params={"after": version, "wait": 10},
                    timeout=20,
                )
                answered["t"] = time.monotonic()

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(0.05)
            pid = daemon.engine("e")["pid"]
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while _engine_ready(gateway):
                pass
            seen = time.monotonic()
            poller.join()
            to_table.append((answered["t"] - killed) * 1000)
            to_gateway.append((seen - answered["t"]) * 1000)
        for name, values in (
            ("SIGKILL -> the daemon's route long-poll answers", to_table),
            ("that answer -> the gateway routes no more to it", to_gateway),
        ):
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
            print(
                f"{name:50s} median {statistics.median(values):6.1f} ms"
                f"  p95 {p95:6.1f} ms  max {ordered[-1]:6.1f} ms"
            )
    finally:
        daemon.cleanup()


if __name__ == "__main__":
    main()
