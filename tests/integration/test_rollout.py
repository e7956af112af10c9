"""Generations, automatic rollback, dry runs and planned restarts through a real daemon."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import psutil

from tests.integration.conftest import Daemon, engine_processes, fake_preset

SICK = {"FAKE_VLLM_HEALTH": "fail"}


def _generation(daemon: Daemon, number: int) -> dict[str, Any]:
    return daemon.get(f"/v1/generations/{number}").json()


def _rows(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("active_presets", "desired_engines", "generations")
        }


def test_a_failed_change_is_rolled_back_and_untouched_engines_keep_running(daemon: Daemon):
    good = fake_preset("p", {"name": "a"}, {"name": "b"})
    assert daemon.put("/v1/presets/p", good).json()["generation"] == 1
    pids = {e: daemon.wait_state(f"p.{e}", "ready")["pid"] for e in "ab"}
    daemon.wait_for(lambda: _generation(daemon, 1)["healthy"] is True, 10, "generation 1 healthy")

    bad = fake_preset(
        "p",
        {"name": "a"},
        {"name": "b", "model": "fake/new-1B", "startup_timeout_s": 1.5, "env": SICK},
    )
    assert daemon.put("/v1/presets/p", bad).json()["generation"] == 2
    daemon.wait_for(lambda: _generation(daemon, 2)["healthy"] is False, 20, "generation 2 failed")
    failed = _generation(daemon, 2)
    assert "p.b not ready within startup_timeout_s=1.5" in failed["verdict"]
    rollback = daemon.wait_for(
        lambda: (g := daemon.get("/v1/generations").json()["generations"][0])["id"] == 3 and g,
        10,
        "the rollback generation",
    )
    assert rollback["cause"].startswith("rollback of 2: p.b not ready")
    assert rollback["auto_rollback"] is False
    assert [e["spec"] for e in rollback["engines"]] == [
        e["spec"] for e in _generation(daemon, 1)["engines"]
    ]
    entry = daemon.wait_for(
        lambda: (
            (e := daemon.engine("p.b"))["state"] == "ready" and e["model"] == "fake/model-1B" and e
        ),
        20,
        "the old p.b back",
    )
    assert entry["pid"] != pids["b"]
    assert daemon.engine("p.a")["pid"] == pids["a"]  # untouched: same process throughout
    assert daemon.engine("p.a")["restarts"] == 0
    types = [e["type"] for e in daemon.events()]
    assert "rollout" in types and "rollback" in types
    daemon.wait_for(lambda: _generation(daemon, 3)["healthy"] is True, 10, "rollback healthy")


def test_rollback_off_keeps_the_failed_state(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "a"}))
    daemon.wait_state("p.a", "ready")
    bad = fake_preset(
        "p", {"name": "a", "model": "fake/new-1B", "startup_timeout_s": 1, "env": SICK}
    )
    assert daemon.put("/v1/presets/p?rollback=false", bad).status_code == 200
    daemon.wait_for(lambda: _generation(daemon, 2)["healthy"] is False, 20, "generation 2 failed")
    time.sleep(1)
    assert daemon.get("/v1/status").json()["generation"] == 2
    assert daemon.engine("p.a")["model"] == "fake/new-1B"
    assert any("rollback off" in e["message"] for e in daemon.events())


def test_a_new_preset_that_fails_is_removed_whole(daemon: Daemon):
    """Seed behaviour of `preset apply`: engines of the preset that did start stop again."""
    preset = fake_preset(
        "p",
        {"name": "ok"},
        {
            "name": "bad",
            "restart": "never",
            "env": {"FAKE_VLLM_CRASH_AFTER": "0.3", "FAKE_VLLM_STARTUP_DELAY": "5"},
        },
    )
    daemon.put("/v1/presets/p", preset)
    daemon.wait_for(lambda: _generation(daemon, 1)["healthy"] is False, 20, "generation 1 failed")
    daemon.wait_for(lambda: daemon.get("/v1/status").json()["presets"] == [], 10, "preset gone")
    daemon.wait_for(lambda: not engine_processes(daemon.home), 15, "no engine process left")
    assert "p.bad failed" in _generation(daemon, 1)["verdict"]


def test_dry_run_changes_nothing(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "a"}))
    pid = daemon.wait_state("p.a", "ready")["pid"]
    rows = _rows(daemon)
    processes = sorted(p.pid for p in engine_processes(daemon.home))
    changed = fake_preset("p", {"name": "a", "model": "fake/other-1B"}, {"name": "b"})
    answer = daemon.put("/v1/presets/p?dry_run=true", changed).json()
    assert answer["dry_run"] is True and answer["generation"] == 1
    actions = {(a["action"], a["engine"]) for a in answer["plan"]}
    assert actions == {("surge", "p.a"), ("start", "p.b")}
    start = next(a for a in answer["plan"] if a["action"] == "start")
    assert len(start["gpus"]) == 1 and start["gpu_bytes"] > 0
    unset = daemon.delete("/v1/presets/p?dry_run=true").json()
    assert [(a["action"], a["engine"]) for a in unset["plan"]] == [("stop", "p.a")]
    plan = daemon.post(
        "/v1/plan", {"change": "engine_put", "id": "x", "spec": {"model": "fake/x-1B"}}
    ).json()
    assert [(a["action"], a["engine"]) for a in plan["plan"]] == [("start", "x")]
    bad = daemon.post(
        "/v1/plan",
        {"change": "engine_put", "id": "x", "spec": {"model": "fake/x-1B", "tensor_parallel": 0}},
    )
    assert bad.status_code == 400 and "tensor_parallel" in bad.json()["error"]["message"]
    assert daemon.post("/v1/plan", {"change": "nope"}).status_code == 400
    assert daemon.post("/v1/rollback?dry_run=true", {"to": 0}).json()["plan"][0]["action"] == "stop"
    time.sleep(0.5)
    assert _rows(daemon) == rows
    assert sorted(p.pid for p in engine_processes(daemon.home)) == processes
    assert daemon.engine("p.a")["pid"] == pid


def test_rollback_to_an_older_generation_restores_exactly_its_engines(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "a"}, {"name": "b"}))  # 1
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B", "label": "v1"})  # 2
    daemon.wait_state("solo", "ready")
    daemon.delete("/v1/presets/p")  # 3
    daemon.put("/v1/engines/solo", {"model": "fake/solo-2B"})  # 4
    daemon.put("/v1/engines/extra", {"model": "fake/extra-1B"})  # 5
    answer = daemon.post("/v1/rollback", {"to": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["generation"] == 6
    for engine in ("p.a", "p.b", "solo"):
        daemon.wait_state(engine, "ready")
    daemon.wait_for(
        lambda: "extra" not in [e["id"] for e in daemon.get("/v1/engines").json()["engines"]],
        15,
        "extra removed",
    )
    status = daemon.get("/v1/status").json()
    assert status["presets"] == ["p"]
    assert sorted(e["id"] for e in status["engines"]) == ["p.a", "p.b", "solo"]
    solo = daemon.engine("solo")
    assert solo["model"] == "fake/solo-1B" and solo["label"] == "v1"
    assert _generation(daemon, 6)["cause"] == "rollback to 2"
    missing = daemon.post("/v1/rollback", {"to": 99})
    assert missing.status_code == 404
    assert "no generation 99; the newest is 6" in missing.json()["error"]["message"]
    bad = daemon.post("/v1/rollback", {"to": "two"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("to: must be")


def test_a_planned_restart_replaces_the_engine_with_a_health_check(daemon: Daemon):
    engine = {"model": "fake/cron-1B", "restart_schedule": "*/2 * * * * *"}
    daemon.put("/v1/engines/cron", engine)
    first = daemon.wait_state("cron", "ready")["pid"]
    entry = daemon.wait_for(
        lambda: (e := daemon.engine("cron"))["state"] == "ready" and e["pid"] != first and e,
        20,
        "a scheduled restart",
    )
    assert entry["restarts"] == 0  # planned, not a crash
    events = daemon.events("cron")
    fired = [
        e
        for e in events
        if e["type"] == "scheduled-restart" and e["message"].startswith("restarting now")
    ]
    assert fired and "cron */2 * * * * *" in fired[0]["message"]
    after = [e["type"] for e in events[events.index(fired[0]) :]]
    assert after.index("stopping") < after.index("started") < after.index("ready")
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_a_changed_engine_is_replaced_start_then_stop_when_both_fit(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B", "gpu_memory_gb": 20})
    old = daemon.wait_state("solo", "ready")
    slow_start = {"FAKE_VLLM_STARTUP_DELAY": "1"}
    answer = daemon.put(
        "/v1/engines/solo", {"model": "fake/solo-2B", "gpu_memory_gb": 20, "env": slow_start}
    )
    assert [a["action"] for a in answer.json()["plan"]] == ["surge"]
    # While the new process starts, the old one keeps serving.
    starting = daemon.wait_for(
        lambda: (e := daemon.engine("solo"))["pid"] not in (None, old["pid"]) and e,
        10,
        "the new process",
    )
    assert starting["state"] == "starting" and starting["port"] != old["port"]
    assert psutil.pid_exists(old["pid"])
    assert _health(old["port"]) == 200
    new = daemon.wait_state("solo", "ready")
    daemon.wait_for(
        lambda: (
            not psutil.pid_exists(old["pid"])
            or psutil.Process(old["pid"]).status() == psutil.STATUS_ZOMBIE
        ),
        10,
        "the old process to stop",
    )
    types = [(e["type"], e["message"]) for e in daemon.events("solo")]
    started = next(i for i, (t, m) in enumerate(types) if t == "started" and str(new["pid"]) in m)
    stopping = next(
        i for i, (t, m) in enumerate(types) if t == "stopping" and f"previous pid {old['pid']}" in m
    )
    ready = max(i for i, (t, _) in enumerate(types) if t == "ready")
    assert started < ready < stopping
    gpus = daemon.get("/v1/gpus").json()
    assert sum(d["reserved_gb"] for d in gpus["devices"]) == 20  # the old reservation is gone


def test_a_change_that_cannot_fit_beside_the_old_process_stops_it_first(daemon: Daemon):
    daemon.put(
        "/v1/engines/big", {"model": "fake/big-1B", "tensor_parallel": 2, "gpu_memory_gb": 60}
    )
    old = daemon.wait_state("big", "ready")
    answer = daemon.put(
        "/v1/engines/big", {"model": "fake/big-2B", "tensor_parallel": 2, "gpu_memory_gb": 60}
    )
    plan = answer.json()["plan"]
    assert [a["action"] for a in plan] == ["replace"]
    assert plan[0]["reason"].startswith("stop first: needs 2 GPUs x 60.0 GiB")
    new = daemon.wait_for(
        lambda: (e := daemon.engine("big"))["state"] == "ready" and e["pid"] != old["pid"] and e,
        20,
        "the replacement",
    )
    assert new["model"] == "fake/big-2B"


def _health(port: int) -> int:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
