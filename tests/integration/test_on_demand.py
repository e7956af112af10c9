"""Engines on demand (issue 14, the daemon's side) over a real daemon and stand-in engines:
idle after `preset set`, started (or woken) by demand, idle again after idle_s, evicted to
make room, and kept as they are across a daemon restart.

Demand and load come from activity reports, POSTed here with the management token as the
gateway POSTs them (a real HTTP client of the daemon's API). The tests that make room run
without the gateway process, so that no report of its own replaces the test's.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psutil
import yaml

from tests.integration.conftest import Daemon, fake_preset, free_port
from tests.integration.test_gateway_requests import MODEL, Gateway

IDLE_S = 1.5


def report(
    daemon: Daemon,
    demand: dict[str, int] | None = None,
    engines: dict[str, dict[str, Any]] | None = None,
) -> None:
    body = {
        "pid": 4242,
        "started_at": time.time() - 10,
        "engines": engines or {},
        "demand": demand or {},
        "totals": {"requests": 0},
    }
    answer = daemon.post("/v1/gateway/activity", body)
    assert answer.status_code == 204, answer.text


def events_of(daemon: Daemon, engine_id: str) -> list[str]:
    return [f"{e['type']}: {e['message']}" for e in daemon.events(engine_id)]


def wait_event(daemon: Daemon, engine_id: str, text: str, timeout: float = 15) -> str:
    def found() -> str | None:
        return next((line for line in events_of(daemon, engine_id) if text in line), None)

    return daemon.wait_for(found, timeout, f"an event of {engine_id} saying {text!r}")


def reserved_gb(daemon: Daemon) -> float:
    return sum(gpu["reserved_gb"] for gpu in daemon.get("/v1/gpus").json()["devices"])


def is_sleeping(daemon: Daemon, engine_id: str) -> bool:
    port = daemon.engine(engine_id)["port"]
    return httpx.get(f"http://127.0.0.1:{port}/is_sleeping", timeout=5).json()["is_sleeping"]


def wait_known(daemon: Daemon, gateway: Gateway, model: str) -> None:
    """Until the gateway runs and routes `model` (to an engine that may be idle)."""

    def routed() -> bool:
        try:
            return any(model in entry["names"] for entry in gateway.models())
        except (httpx.TransportError, ValueError, KeyError):
            return False

    daemon.wait_for(routed, 20, f"the gateway to know {model}")


def test_demand_starts_an_on_demand_engine_and_idle_s_stops_it(make_daemon):
    daemon = make_daemon(gateway={"enabled": True, "port": free_port()})
    gateway = Gateway(daemon)
    preset = fake_preset("p", {"name": "chat", "start": "on-demand", "idle_s": IDLE_S})
    assert daemon.put("/v1/presets/p", preset).status_code in (200, 201)
    entry = daemon.wait_state("p.chat", "idle")
    assert entry["pid"] is None
    assert entry["message"] == "on demand: starts on the first request"
    shown = daemon.cli("status")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "p.chat" in line)
    assert "idle" in row and "on demand" in row
    # preset set is healthy at once: an engine nobody asked for holds no verdict open.
    daemon.wait_for(
        lambda: any("is healthy" in e["message"] for e in daemon.events()),
        10,
        "the generation to be judged healthy",
    )
    route = next(
        e
        for e in daemon.client.get("/v1/routes", headers=daemon.auth()).json()["engines"]
        if e["id"] == "p.chat"
    )
    assert (route["state"], route["ready"], route["start"], route["idle_s"]) == (
        "idle",
        False,
        "on-demand",
        IDLE_S,
    )

    wait_known(daemon, gateway, MODEL)
    answers: list[httpx.Response] = []
    held = threading.Thread(target=lambda: answers.append(gateway.chat(MODEL)))
    # The gateway holds it (no engine of the model is ready) and reports the demand.
    held.start()
    try:
        ready = daemon.wait_state("p.chat", "ready")
    finally:
        held.join(30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    wait_event(daemon, "p.chat", "waking: 1 requests waiting")
    pid = ready["pid"]
    assert psutil.pid_exists(pid)
    # Nothing in flight through the gateway for idle_s: stopped, and idle again.
    idle = daemon.wait_state("p.chat", "idle", timeout=20)
    assert idle["pid"] is None and idle["message"].startswith(f"idle: no request for {IDLE_S:g} s")
    daemon.wait_for(lambda: not psutil.pid_exists(pid), 10, f"pid {pid} to be gone")
    wait_event(daemon, "p.chat", f"idle: no request for {IDLE_S:g} s")
    assert reserved_gb(daemon) == 0


def test_a_sleeping_engine_keeps_its_process_and_releases_its_reservation(make_daemon):
    daemon = make_daemon(gateway={"enabled": True, "port": free_port()})
    spec = {"name": "chat", "start": "on-demand", "idle_s": IDLE_S, "idle_action": "sleep"}
    assert daemon.put("/v1/presets/p", fake_preset("p", spec)).status_code in (200, 201)
    daemon.wait_state("p.chat", "idle")
    report(daemon, demand={"p.chat": 2})
    pid = daemon.wait_state("p.chat", "ready")["pid"]
    assert reserved_gb(daemon) > 0
    asleep = daemon.wait_state("p.chat", "idle", timeout=20)
    assert asleep["pid"] == pid and psutil.pid_exists(pid)
    assert is_sleeping(daemon, "p.chat")
    assert reserved_gb(daemon) == 0
    wait_known(daemon, Gateway(daemon), MODEL)
    # A request wakes the same process: ready again, its reservation back.
    answer = Gateway(daemon).chat(MODEL)
    assert answer.status_code == 200, answer.text
    awake = daemon.engine("p.chat")
    assert awake["state"] == "ready" and awake["pid"] == pid
    assert not is_sleeping(daemon, "p.chat")
    assert reserved_gb(daemon) > 0
    wait_event(daemon, "p.chat", "waking: 1 requests waiting")


def two_on_one_gpu(make_daemon: Any) -> Daemon:
    daemon = make_daemon(gpus="simulate:1x80")
    engines = [
        {"name": name, "start": "on-demand", "idle_s": 600, "gpu_memory_gb": 50}
        for name in ("a", "b")
    ]
    assert daemon.put("/v1/presets/p", fake_preset("p", *engines)).status_code in (200, 201)
    daemon.wait_state("p.a", "idle")
    daemon.wait_state("p.b", "idle")
    report(daemon, demand={"p.a": 1})
    daemon.wait_state("p.a", "ready")
    return daemon


def test_demand_for_an_engine_that_does_not_fit_evicts_an_idle_one(make_daemon):
    daemon = two_on_one_gpu(make_daemon)
    a_pid = daemon.engine("p.a")["pid"]
    most = [reserved_gb(daemon)]
    idle_a = {"inflight": 0, "queued": 0, "last_request_at": time.time() - 5}
    report(daemon, demand={"p.b": 1}, engines={"p.a": idle_a})

    def b_ready() -> bool:
        most.append(reserved_gb(daemon))
        return daemon.engine("p.b")["state"] == "ready"

    daemon.wait_for(b_ready, 20, "p.b ready")
    a = daemon.engine("p.a")
    assert a["state"] == "idle" and a["pid"] is None and not psutil.pid_exists(a_pid)
    assert a["message"] == "idle: evicted to make room for p.b"
    # Never both reserved: the 80 GiB GPU holds one 50 GiB engine.
    assert max(most) <= 50.5
    wait_event(daemon, "p.b", "making room: evicting p.a")


def test_a_busy_engine_is_never_evicted(make_daemon):
    daemon = two_on_one_gpu(make_daemon)
    busy_a = {"inflight": 1, "queued": 0, "last_request_at": time.time()}
    report(daemon, demand={"p.b": 1}, engines={"p.a": busy_a})
    line = wait_event(daemon, "p.b", "pending: ")
    assert "only busy or always-on engines hold the memory: p.a (busy)" in line
    assert daemon.engine("p.a")["state"] == "ready"
    assert daemon.engine("p.b")["state"] == "pending"
    # Once A is done, the same demand evicts it.
    done_a = {"inflight": 0, "queued": 0, "last_request_at": time.time()}
    report(daemon, demand={"p.b": 1}, engines={"p.a": done_a})
    daemon.wait_state("p.b", "ready")
    assert daemon.engine("p.a")["state"] == "idle"


def test_a_daemon_restart_keeps_idle_engines_idle_and_running_ones_running(make_daemon):
    daemon = make_daemon()
    preset = fake_preset(
        "p",
        {"name": "lazy", "start": "on-demand"},
        {"name": "sleepy", "start": "on-demand", "idle_s": IDLE_S, "idle_action": "sleep"},
        {"name": "up"},
    )
    path = daemon.home / "p.yaml"
    path.write_text(yaml.safe_dump(preset))
    # --wait follows the change until healthy: idle engines do not hold it open.
    done = daemon.cli("preset", "set", "--file", str(path), "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    up_pid = daemon.wait_state("p.up", "ready")["pid"]
    daemon.wait_state("p.lazy", "idle")
    report(daemon, demand={"p.sleepy": 1})
    sleepy_pid = daemon.wait_state("p.sleepy", "ready")["pid"]

    def asleep() -> bool:
        report(daemon)  # fresh reports with nothing in flight: it goes idle after idle_s
        return daemon.engine("p.sleepy")["state"] == "idle"

    daemon.wait_for(asleep, 20, "p.sleepy asleep")
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.engine("p.up")["state"] == "ready"
    assert daemon.engine("p.up")["pid"] == up_pid
    assert daemon.engine("p.lazy")["state"] == "idle" and daemon.engine("p.lazy")["pid"] is None
    sleepy = daemon.engine("p.sleepy")
    assert (sleepy["state"], sleepy["pid"]) == ("idle", sleepy_pid)
    assert is_sleeping(daemon, "p.sleepy")
    time.sleep(1.0)  # a few passes: nothing starts or wakes by itself
    assert daemon.engine("p.lazy")["state"] == "idle"
    assert daemon.engine("p.sleepy")["state"] == "idle" and is_sleeping(daemon, "p.sleepy")
    assert daemon.engine("p.up")["pid"] == up_pid


def test_alternating_requests_swap_two_engines_through_the_gateway(make_daemon):
    daemon = make_daemon(gpus="simulate:1x80", gateway={"enabled": True, "port": free_port()})
    gateway = Gateway(daemon)
    # A streams slowly, so a request can keep it busy while B is asked for.
    slow = {"FAKE_VLLM_STREAM_TOKENS": "30", "FAKE_VLLM_TOKEN_INTERVAL_MS": "100"}
    engines = [
        {"name": "a", "model": "fake/a", "start": "on-demand", "gpu_memory_gb": 50, "env": slow},
        {"name": "b", "model": "fake/b", "start": "on-demand", "gpu_memory_gb": 50},
    ]
    assert daemon.put("/v1/presets/p", fake_preset("p", *engines)).status_code in (200, 201)
    daemon.wait_state("p.a", "idle")
    daemon.wait_state("p.b", "idle")
    wait_known(daemon, gateway, "fake/b")
    most: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            most.append(reserved_gb(daemon))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for model in ("fake/a", "fake/b", "fake/a", "fake/b"):
            answer = gateway.chat(model)
            assert answer.status_code == 200, (model, answer.text)
            assert answer.json()["model"] == model
        assert daemon.engine("p.a")["state"] == "idle"
        # A long stream on A, then a request for B: B waits, A is not evicted under it.
        with gateway.client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "fake/a",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
        ) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            assert daemon.engine("p.a")["state"] == "ready"
            answers: list[httpx.Response] = []
            for_b = threading.Thread(target=lambda: answers.append(gateway.chat("fake/b")))
            for_b.start()
            line = wait_event(daemon, "p.b", "(busy)")
            assert "only busy or always-on engines hold the memory: p.a (busy)" in line
            assert daemon.engine("p.a")["state"] == "ready"
            rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"
        for_b.join(30)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert daemon.engine("p.a")["state"] == "idle"
    finally:
        sampling.set()
        sampler.join(5)
    assert most and max(most) <= 50.5
