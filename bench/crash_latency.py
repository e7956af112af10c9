"""Crash-detection and crash-to-respawn latency of sagellmd, over 20 first crashes.

Run: .venv/bin/python bench/crash_latency.py [--crashes 20]
Detection = SIGKILL of the engine -> the daemon's `exited` event; respawn = SIGKILL -> the
`started` event of the new process (written right after the spawn returned its pid).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.conftest import Daemon, base_config  # noqa: E402


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crashes", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sagellm-bench-")) / "home"
    # reset_after_s is short so that every crash is a first crash (restarted at once).
    daemon = Daemon(
        home, base_config(restart={"backoff_base_s": 1, "backoff_max_s": 30, "reset_after_s": 0.3})
    )
    daemon.start()
    detection, respawn = [], []
    try:
        daemon.put("/v1/engines/bench", {"model": "fake/bench-1B"})
        for _ in range(args.crashes):
            entry = daemon.wait_state("bench", "ready")
            time.sleep(0.4)
            last = daemon.get("/v1/events", params={"limit": 1}).json()["last_id"]
            killed_at = time.time()
            os.kill(entry["pid"], signal.SIGKILL)
            exited = started = None
            while started is None:
                body = daemon.get("/v1/events", params={"after": last, "wait": 5}).json()
                for event in body["events"]:
                    if event["engine"] != "bench":
                        continue
                    if event["type"] == "exited" and exited is None:
                        exited = ts(event["ts"])
                    if event["type"] == "started" and exited is not None:
                        started = ts(event["ts"])
                last = body["last_id"]
            detection.append((exited - killed_at) * 1000)
            respawn.append((started - killed_at) * 1000)
    finally:
        daemon.stop()
        daemon.cleanup()
    for name, values, target in (("detection", detection, 20.0), ("respawn", respawn, 150.0)):
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        print(
            f"{name:9s} n={len(values)} median={p50:6.1f} ms  p95={p95:6.1f} ms  "
            f"max={max(values):6.1f} ms  target p95<{target:g} ms  p95/target={p95 / target:.2f}"
        )


if __name__ == "__main__":
    main()
