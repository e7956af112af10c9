"""GPU placement with simulated GPUs, and a daemon without NVML, through a real daemon."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from tests.integration.conftest import Daemon, fake_preset


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_engines_receive_their_gpus_and_memory_share(daemon: Daemon, tmp_path: Path):
    record = tmp_path / "record.jsonl"
    engine = {"name": "big", "tensor_parallel": 2, "gpu_memory_gb": 20,
              "env": {"FAKE_VLLM_RECORD": str(record)}}
    daemon.put("/v1/presets/p", fake_preset("p", engine))
    entry = daemon.wait_state("p.big", "ready")
    assert entry["gpus"] == [0, 1] and entry["gpu_memory_gb"] == 20
    argv = _records(record)[-1]["argv"]
    env = _records(record)[-1]["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert float(argv[argv.index("--gpu-memory-utilization") + 1]) == 0.25  # 20 of 80 GiB
    gpus = daemon.get("/v1/gpus").json()
    assert gpus["mode"] == "simulated" and gpus["simulated"] is True
    assert "simulated" in gpus["message"]
    for device in gpus["devices"]:
        assert device["simulated"] is True
        assert device["total_gb"] == 80
        assert device["reserved_gb"] == 20
        assert device["reservations"] == [{"engine": "p.big", "gb": 20}]
    assert daemon.get("/v1/status").json()["gpus"]["mode"] == "simulated"


def test_an_engine_that_does_not_fit_waits_then_starts_when_memory_frees(daemon: Daemon):
    # 0.95 x 80 = 76 GiB usable per GPU.
    daemon.put("/v1/engines/first", {"model": "fake/a-1B", "gpu_memory_gb": 60})
    daemon.put("/v1/engines/second", {"model": "fake/b-1B", "gpu_memory_gb": 60})
    daemon.wait_state("first", "ready")
    daemon.wait_state("second", "ready")
    response = daemon.put("/v1/engines/third", {"model": "fake/c-1B", "gpu_memory_gb": 30})
    assert [a["action"] for a in response.json()["plan"]] == ["pending"]
    entry = daemon.wait_state("third", "pending")
    assert entry["message"] == (
        "needs 1 GPU x 30.0 GiB; GPU0 16.0 GiB free, GPU1 16.0 GiB free"
    )
    assert entry["pid"] is None and entry["memory_estimate"]["source"] == "gpu_memory_gb"
    daemon.delete("/v1/engines/first")
    entry = daemon.wait_state("third", "ready")
    assert entry["gpus"] in ([0], [1])
    events = [e["type"] for e in daemon.events("third")]
    assert events[0] == "pending" and "ready" in events


def test_engines_sharing_a_gpu_start_one_after_the_other(daemon: Daemon):
    slow = {"FAKE_VLLM_STARTUP_DELAY": "0.8"}
    engines = [{"name": n, "gpu_memory_gb": 30, "env": slow} for n in ("a", "b", "c")]
    daemon.put("/v1/presets/p", fake_preset("p", *engines))
    placed = {e: daemon.wait_state(f"p.{e}", "ready", timeout=30)["gpus"] for e in "abc"}
    events = {}
    for engine in "abc":
        for event in daemon.events(f"p.{engine}"):
            events.setdefault((engine, event["type"]), _ts(event["ts"]))
    # Two GPUs: two engines start together on different GPUs, the third waits for the
    # engine starting on the GPU it shares.
    by_gpu: dict[int, list[str]] = {}
    for engine, gpus in placed.items():
        by_gpu.setdefault(gpus[0], []).append(engine)
    shared = next(group for group in by_gpu.values() if len(group) == 2)
    alone = next(group for group in by_gpu.values() if len(group) == 1)[0]
    first, second = sorted(shared, key=lambda e: events[(e, "started")])
    assert events[(second, "started")] >= events[(first, "ready")]
    assert ("pending" in [t for (e, t) in events if e == second])
    other_first = first if events[(first, "started")] < events[(alone, "started")] else alone
    other = alone if other_first == first else first
    # The engine alone on its GPU did not wait for the other GPU's start to finish.
    assert events[(other, "started")] < events[(other_first, "ready")]


def test_without_nvml_cpu_engines_run_and_gpu_engines_wait_with_the_reason(make_daemon):
    daemon: Daemon = make_daemon(gpus="auto")
    gpus = daemon.get("/v1/gpus").json()
    assert gpus["devices"] == [] and gpus["mode"] == "none"
    assert gpus["message"].startswith("no GPUs (NVML unavailable:")
    daemon.put("/v1/engines/cpu", {"model": "fake/cpu-1B", "use_gpu": False})
    daemon.put("/v1/engines/gpu", {"model": "fake/gpu-1B"})
    entry = daemon.wait_state("cpu", "ready")
    assert entry["gpus"] == []
    waiting = daemon.wait_state("gpu", "pending")
    assert waiting["message"].startswith("needs 1 GPU x ")
    assert "no GPUs (NVML unavailable:" in waiting["message"]
    assert waiting["memory_estimate"]["source"] == "name"
    status = daemon.cli("status")
    assert status.returncode == 0 and "NVML unavailable" in status.stdout
