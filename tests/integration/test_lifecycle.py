"""Engines start, stay up, come back after crashes, and leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil

from tests.integration.conftest import Daemon, engine_processes, fake_preset


def test_preset_set_answers_before_the_engine_is_up_then_it_becomes_ready(daemon: Daemon):
    preset = fake_preset("p", {"name": "chat", "env": {"FAKE_VLLM_STARTUP_DELAY": "1.5"}})
    started = time.monotonic()
    response = daemon.put("/v1/presets/p", preset)
    answered_after = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generation"] == 1
    assert [(a["action"], a["engine"]) for a in body["plan"]] == [("start", "p.chat")]
    assert answered_after < 1.0
    assert daemon.engine("p.chat")["state"] in ("pending", "starting")
    entry = daemon.wait_state("p.chat", "ready")
    assert entry["pid"] and entry["port"]
    assert psutil.Process(entry["pid"]).environ()["SAGELLM_ENGINE_ID"] == "p.chat"
    types = [event["type"] for event in daemon.events("p.chat")]
    assert types[:3] == ["starting", "started", "ready"]
    status = daemon.get("/v1/status").json()
    assert status["presets"] == ["p"]
    assert {
        "id",
        "preset",
        "name",
        "kind",
        "model",
        "runtime",
        "state",
        "pid",
        "port",
        "restarts",
        "label",
        "message",
    } <= set(status["engines"][0])


def test_sigkill_is_noticed_and_the_engine_restarted(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}))
    first = daemon.wait_state("p.chat", "ready")
    os.kill(first["pid"], signal.SIGKILL)
    second = daemon.wait_for(
        lambda: (
            (e := daemon.engine("p.chat"))["state"] == "ready" and e["pid"] != first["pid"] and e
        ),
        20,
        "a new ready process",
    )
    assert second["restarts"] == 1
    assert second["port"] == first["port"]
    assert second["last_exit"]["signal"] == signal.SIGKILL
    events = daemon.events("p.chat")
    exited = [e for e in events if e["type"] == "exited"]
    assert exited and "signal 9" in exited[0]["message"]
    assert any(e["type"] == "restarting" for e in events)


def test_crash_loop_backs_off_with_growing_delays(daemon: Daemon):
    engine = {"name": "crashy", "env": {"FAKE_VLLM_CRASH_AFTER": "0.05"}}
    # rollback=false: this is about the backoff, not about reverting a failed change.
    daemon.put("/v1/presets/p?rollback=false", fake_preset("p", engine))

    def five_restarts():
        events = daemon.events("p.crashy")
        return events if sum(e["type"] == "restarting" for e in events) >= 4 else None

    events = daemon.wait_for(five_restarts, 30, "4 restarts")
    # The gap from each exit to the following restart is the backoff delay.
    gaps = []
    last_exit = None
    for event in events:
        ts = _ts(event["ts"])
        if event["type"] == "exited":
            last_exit = ts
        elif event["type"] == "restarting" and last_exit is not None:
            gaps.append(ts - last_exit)
            last_exit = None
    assert len(gaps) >= 4
    assert gaps[0] < 0.15  # the first restart is immediate
    assert gaps[1] >= 0.18 and gaps[2] >= 0.38 and gaps[3] >= 0.78, gaps
    entry = daemon.engine("p.crashy")
    assert entry["restarts"] >= 4
    assert entry["state"] in ("backoff", "starting")


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_unset_stops_the_whole_process_tree(daemon: Daemon, tmp_path: Path):
    record = tmp_path / "record.jsonl"
    engine = {
        "name": "forky",
        "env": {"FAKE_VLLM_FORK_CHILD": "1", "FAKE_VLLM_RECORD": str(record)},
    }
    daemon.put("/v1/presets/p", fake_preset("p", engine))
    entry = daemon.wait_state("p.forky", "ready")
    child_pid = json.loads(record.read_text().splitlines()[-1])["child_pid"]
    assert psutil.pid_exists(child_pid)
    assert os.getpgid(child_pid) == entry["pid"]
    response = daemon.delete("/v1/presets/p")
    assert response.status_code == 200, response.text
    assert [a["action"] for a in response.json()["plan"]] == ["stop"]
    daemon.wait_for(lambda: not engine_processes(daemon.home), 10, "no engine process left")
    assert (
        not psutil.pid_exists(child_pid)
        or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    )
    daemon.wait_for(
        lambda: daemon.get("/v1/engines").json()["engines"] == [], 10, "engine forgotten"
    )
    assert [e["type"] for e in daemon.events("p.forky")][-2:] == ["stopping", "stopped"]


def test_an_engine_that_ignores_sigterm_is_killed_after_the_grace_period(daemon: Daemon):
    engine = {"name": "stubborn", "env": {"FAKE_VLLM_IGNORE_SIGTERM": "1"}}
    daemon.put("/v1/presets/p", fake_preset("p", engine))
    entry = daemon.wait_state("p.stubborn", "ready")
    started = time.monotonic()
    daemon.delete("/v1/presets/p")
    daemon.wait_for(lambda: not psutil.pid_exists(entry["pid"]), 10, "the engine to die")
    took = time.monotonic() - started
    assert 1.5 <= took < 6, took  # stop_grace_s is 2 in the test config


def test_desired_state_and_engines_survive_a_daemon_restart(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "a"}, {"name": "b"}))
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    before = {e: daemon.wait_state(e, "ready")["pid"] for e in ("p.a", "p.b", "solo")}
    assert daemon.stop() == 0
    # Live restore: the engines keep running without the daemon.
    assert all(psutil.pid_exists(pid) for pid in before.values())
    daemon.start()
    status = daemon.get("/v1/status").json()
    assert status["presets"] == ["p"]
    assert sorted(e["id"] for e in status["engines"]) == ["p.a", "p.b", "solo"]
    after = {e: daemon.wait_state(e, "ready")["pid"] for e in before}
    assert after == before
    assert all(daemon.engine(e)["restarts"] == 0 for e in before)
    assert any(e["type"] == "adopted" for e in daemon.events("p.a"))


def test_an_engine_that_died_while_the_daemon_was_down_is_restarted(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    pid = daemon.wait_state("solo", "ready")["pid"]
    daemon.stop()
    os.killpg(pid, signal.SIGKILL)
    daemon.start()
    entry = daemon.wait_for(
        lambda: (e := daemon.engine("solo"))["state"] == "ready" and e["pid"] != pid and e,
        20,
        "a new process",
    )
    assert entry["restarts"] == 1


def test_a_second_daemon_on_the_same_home_is_refused(daemon: Daemon, make_daemon):
    second = make_daemon(start=False, home=daemon.home)
    second.start(wait=False)
    assert second.process.wait(20) == 2
    assert f"pid {daemon.process.pid}" in second.log()


def test_label_change_restarts_nothing_but_a_model_change_replaces(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B", "label": "one"})
    pid = daemon.wait_state("solo", "ready")["pid"]
    response = daemon.put("/v1/engines/solo", {"model": "fake/solo-1B", "label": "two"})
    assert response.status_code == 200 and response.json()["plan"] == []
    time.sleep(0.5)
    entry = daemon.engine("solo")
    assert entry["pid"] == pid and entry["label"] == "two"
    response = daemon.put("/v1/engines/solo", {"model": "fake/other-1B"})
    assert [a["action"] for a in response.json()["plan"]] == ["surge"]
    entry = daemon.wait_for(
        lambda: (e := daemon.engine("solo"))["state"] == "ready" and e["pid"] != pid and e,
        20,
        "the replacement",
    )
    assert entry["model"] == "fake/other-1B" and entry["restarts"] == 0


def test_restart_endpoint_starts_a_new_process(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    pid = daemon.wait_state("solo", "ready")["pid"]
    assert daemon.post("/v1/engines/solo/restart").status_code == 200
    daemon.wait_for(
        lambda: (e := daemon.engine("solo"))["state"] == "ready" and e["pid"] != pid,
        20,
        "a new process",
    )
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unhealthy_engine_is_restarted(daemon: Daemon):
    engine = {"model": "fake/sick-1B", "env": {"FAKE_VLLM_HEALTH_FAIL_AFTER": "0.5"}}
    daemon.put("/v1/engines/sick", engine)
    pid = daemon.wait_state("sick", "ready")["pid"]
    daemon.wait_for(
        lambda: daemon.engine("sick")["pid"] not in (None, pid),
        20,
        "a restart after failed health checks",
    )
    types = [e["type"] for e in daemon.events("sick")]
    assert "unhealthy" in types and "restarting" in types


def test_startup_timeout_counts_as_a_failure(daemon: Daemon):
    engine = {
        "model": "fake/slow-1B",
        "startup_timeout_s": 0.5,
        "env": {"FAKE_VLLM_STARTUP_DELAY": "30"},
    }
    daemon.put("/v1/engines/slow?rollback=false", engine)
    daemon.wait_for(
        lambda: any(e["type"] == "restarting" for e in daemon.events("slow")),
        20,
        "a restart after the startup timeout",
    )
    messages = " ".join(e["message"] for e in daemon.events("slow"))
    assert "startup_timeout_s=0.5" in messages


def test_a_spec_without_startup_timeout_gets_its_runtime_kinds(daemon: Daemon, tmp_path: Path):
    # The GGUF file is not there: the llama-cpp engines fail to start without a process.
    gguf = str(tmp_path / "absent.gguf")
    answer = daemon.put("/v1/engines/cpu?rollback=false", {"model": gguf, "runtime": "llama-cpp"})
    assert answer.status_code == 201, answer.text
    preset = fake_preset(
        "p",
        {"name": "chat"},
        {"name": "embed", "kind": "embedding", "runtime": "vllm"},
        {"name": "own", "runtime": "llama-cpp", "model": gguf, "startup_timeout_s": 42},
    )
    answer = daemon.put("/v1/presets/p?rollback=false", preset)
    assert answer.status_code == 200, answer.text
    # The engine views are the loop's snapshot: wait until it has taken in the preset.
    engines = daemon.wait_for(
        lambda: len(found := daemon.get("/v1/engines").json()["engines"]) == 4 and found,
        10,
        "the four engines",
    )
    timeouts = {e["id"]: daemon.engine(e["id"])["spec"]["startup_timeout_s"] for e in engines}
    # vllm keeps the figures every spec had (by kind); the CPU runtime says 300.
    assert timeouts == {"cpu": 300.0, "p.chat": 900.0, "p.embed": 180.0, "p.own": 42.0}
    stored = daemon.get("/v1/generations/2").json()["engines"]
    assert {e["id"]: e["spec"]["startup_timeout_s"] for e in stored}["cpu"] == 300.0


def test_engine_logs_are_kept_in_a_file(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    daemon.wait_state("solo", "ready")
    body = daemon.get("/v1/engines/solo/logs", params={"tail": 50}).json()
    assert body["path"].endswith("logs/solo.log")
    assert any("fake vLLM serving fake/solo-1B" in line for line in body["lines"])


def test_an_engine_that_fails_shows_its_last_words_in_status(daemon: Daemon):
    engine = {
        "model": "fake/dies-1B",
        "restart": "never",
        "env": {"FAKE_VLLM_CRASH_AFTER": "0.2", "FAKE_VLLM_STARTUP_DELAY": "5"},
    }
    daemon.put("/v1/engines/dies?rollback=false", engine)
    entry = daemon.wait_state("dies", "failed")
    assert "exit code 1" in entry["message"]
    assert "it said: fake_vllm: crashing as told" in entry["message"]
    exited = [e for e in daemon.events("dies") if e["type"] == "exited"]
    assert "last log line: fake_vllm: crashing as told" in exited[-1]["message"]
