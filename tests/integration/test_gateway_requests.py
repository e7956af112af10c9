"""Requests through the real gateway process to real stand-in engines, a real daemon behind.

Routing by served name, engine id, label and alias; the openai client; load sharing; caps
and queueing; ordering policies; failover; cancellation; a daemon that goes away.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import Daemon, base_config, fake_preset, free_port

MODEL = "fake/model-1B"


class Gateway:
    """The gateway the daemon runs: its URL and a client for it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.port = daemon.config["gateway"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def chat(self, model: str, content: str = "hi", **fields: Any) -> httpx.Response:
        headers = fields.pop("headers", {})
        body = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
        return self.client.post("/v1/chat/completions", json=body, headers=headers)

    def models(self) -> list[dict[str, Any]]:
        return self.client.get("/v1/models").json()["data"]

    def wait_routable(self, name: str, replicas: int = 1, timeout: float = 30) -> None:
        def ready() -> bool:
            try:
                for entry in self.models():
                    if name == entry["id"] or name in entry["names"]:
                        up = [e for e in entry["engines"] if e["state"] == "ready"]
                        return len(up) >= replicas
            except (httpx.TransportError, ValueError, KeyError):
                return False
            return False

        self.daemon.wait_for(ready, timeout, f"{name} routable with {replicas} ready engine(s)")


class Load:
    """Clients sending chat requests one after another until the block ends."""

    def __init__(self, gateway: Gateway, clients: int) -> None:
        self.gateway = gateway
        self.clients = clients
        self.failures: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            answer = self.gateway.chat(MODEL, f"q{i}")
            self.done += 1
            if answer.status_code != 200:
                self.failures.append(answer.text)

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, args=(i,))
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def gateway_daemon(make_daemon: Any, preset: dict[str, Any] | None = None, **gateway: Any) -> Any:
    daemon = make_daemon(gateway={"enabled": True, "port": free_port(), **gateway})
    if preset is not None:
        answer = daemon.put(f"/v1/presets/{preset['name']}", preset)
        assert answer.status_code in (200, 201), answer.text
    return daemon, Gateway(daemon)


def engine_stats(daemon: Daemon, engine_id: str) -> dict[str, Any]:
    port = daemon.engine(engine_id)["port"]
    return httpx.get(f"http://127.0.0.1:{port}/fake/stats", timeout=5).json()


@pytest.fixture(scope="module")
def chat_and_embed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Gateway]]:
    """One daemon and gateway serving a chat and an embedding engine, for the tests that only
    send requests that change nothing there (a daemon, its gateway and two engines are
    seconds of CPU to start)."""
    config = base_config(gateway={"enabled": True, "port": free_port()})
    daemon = Daemon(tmp_path_factory.mktemp("chat-and-embed") / "home", config)
    try:
        daemon.start()
        preset = fake_preset(
            "p",
            {"name": "chat", "label": "fast", "aliases": ["gpt-local", "local"]},
            {"name": "embed", "kind": "embedding", "runtime": "vllm", "model": "fake/embedder"},
        )
        answer = daemon.put("/v1/presets/p", preset)
        assert answer.status_code == 200, answer.text
        gateway = Gateway(daemon)
        gateway.wait_routable(MODEL)
        gateway.wait_routable("fake/embedder")
        yield daemon, gateway
    finally:
        daemon.cleanup()


def test_chat_completions_and_embeddings_by_every_routable_name(
    chat_and_embed: tuple[Daemon, Gateway],
):
    daemon, gateway = chat_and_embed
    for name in (MODEL, "p.chat", "fast", "gpt-local"):
        answer = gateway.chat(name)
        assert answer.status_code == 200, (name, answer.text)
        # The engine was asked for its own served name, whatever name the client used.
        assert answer.json()["model"] == MODEL
        assert answer.headers["x-request-id"]
    completion = gateway.client.post("/v1/completions", json={"model": "fast", "prompt": "x"})
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    vectors = gateway.client.post("/v1/embeddings", json={"model": "p.embed", "input": ["a", "b"]})
    assert vectors.status_code == 200, vectors.text
    assert len(vectors.json()["data"]) == 2
    # A request id the client sends is the one the engine and the answer carry.
    answer = gateway.chat("fast", headers={"X-Request-Id": "mine-1"})
    assert answer.headers["x-request-id"] == "mine-1"
    received = engine_stats(daemon, "p.chat")["received"]
    assert any(entry["x_request_id"] == "mine-1" for entry in received)
    listed = {entry["id"]: entry for entry in gateway.models()}
    assert {"fake/model-1B", "gpt-local", "fake/embedder"} <= set(listed)
    assert listed["gpt-local"]["engines"] == [{"id": "p.chat", "state": "ready", "label": "fast"}]


def test_errors_are_openai_shaped(chat_and_embed: tuple[Daemon, Gateway]):
    _, gateway = chat_and_embed
    missing = gateway.chat("nope")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL in error["message"] and "p.chat" in error["message"]
    for body in (b"{not json", b"[1, 2]", b'{"messages": []}'):
        bad = gateway.client.post("/v1/chat/completions", content=body)
        assert bad.status_code == 400, body
        assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    wrong = gateway.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "endpoint_not_served"


def test_the_openai_client_works_streaming_included(chat_and_embed: tuple[Daemon, Gateway]):
    _, gateway = chat_and_embed
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        if chunk.choices
    ]
    assert len(pieces) > 1 and "".join(pieces)
    embedding = client.embeddings.create(model="fake/embedder", input=["one", "two"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0
    assert [entry.id for entry in client.models.list()]


def _two_replicas(make_daemon: Any, env: dict[str, str] | None = None, **gateway: Any) -> Any:
    engines = [
        {"name": "a", "env": env or {}},
        {"name": "b", "env": env or {}},
    ]
    daemon, client = gateway_daemon(make_daemon, fake_preset("p", *engines), **gateway)
    client.wait_routable(MODEL, replicas=2)
    return daemon, client


def test_two_replicas_share_the_load_under_least_outstanding(make_daemon):
    daemon, gateway = _two_replicas(make_daemon, {"FAKE_VLLM_LATENCY_MS": "10"})
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: gateway.chat(MODEL, f"q{i}").status_code, range(200)))
    assert codes == [200] * 200
    a = engine_stats(daemon, "p.a")["requests"]
    b = engine_stats(daemon, "p.b")["requests"]
    assert a + b == 200
    assert max(a, b) <= 120, f"a got {a}, b got {b} of 200"


def test_prefix_balance_sends_one_prefix_to_one_replica(make_daemon):
    daemon, gateway = _two_replicas(make_daemon, balance="prefix")
    prompts = [f"system prompt number {n} " * 20 for n in range(6)]
    for _ in range(3):
        for prompt in prompts:
            headers = {"X-Request-Id": f"{prompts.index(prompt)}-{time.monotonic_ns()}"}
            assert gateway.chat(MODEL, prompt, headers=headers).status_code == 200
    where: dict[str, set[str]] = {}
    for engine in ("p.a", "p.b"):
        for entry in engine_stats(daemon, engine)["received"]:
            where.setdefault(entry["x_request_id"].split("-")[0], set()).add(engine)
    assert len(where) == 6
    assert all(len(engines) == 1 for engines in where.values()), where
    assert len({engine for engines in where.values() for engine in engines}) == 2, where


def test_a_cap_of_two_holds_and_the_rest_wait(make_daemon):
    preset = fake_preset(
        "p", {"name": "chat", "max_concurrent_requests": 2, "env": {"FAKE_VLLM_LATENCY_MS": "300"}}
    )
    daemon, gateway = gateway_daemon(make_daemon, preset)
    gateway.wait_routable(MODEL)
    seen_waiting = []

    def watch() -> None:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            text = gateway.client.get("/metrics").text
            for line in text.splitlines():
                if line.startswith("sagellm_gateway_queue_length{"):
                    seen_waiting.append(float(line.rsplit(" ", 1)[1]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: gateway.chat(MODEL, f"q{i}").status_code, range(10)))
    watcher.join()
    assert codes == [200] * 10
    stats = engine_stats(daemon, "p.chat")
    assert stats["max_inflight"] == 2, stats["max_inflight"]
    assert max(seen_waiting) == 8, seen_waiting


def test_a_full_queue_answers_429_with_retry_after(make_daemon):
    preset = fake_preset(
        "p", {"name": "chat", "max_concurrent_requests": 1, "env": {"FAKE_VLLM_LATENCY_MS": "600"}}
    )
    daemon, gateway = gateway_daemon(make_daemon, preset, queue={"max_waiting": 2})
    gateway.wait_routable(MODEL)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: gateway.chat(MODEL, f"q{i}"), range(6)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 200, 200, 429, 429, 429], codes
    rejected = [answer for answer in answers if answer.status_code == 429]
    assert all(answer.headers.get("retry-after") for answer in rejected)
    assert rejected[0].json()["error"]["code"] == "queue_full"


def test_priority_serves_a_late_urgent_request_first(make_daemon):
    preset = fake_preset(
        "p", {"name": "chat", "max_concurrent_requests": 1, "env": {"FAKE_VLLM_LATENCY_MS": "250"}}
    )
    daemon, gateway = gateway_daemon(make_daemon, preset, policy="priority")
    gateway.wait_routable(MODEL)
    threads = []

    def send(request_id: str, priority: int | None) -> None:
        headers = {"X-Request-Id": request_id}
        if priority is not None:
            headers["X-Priority"] = str(priority)
        assert gateway.chat(MODEL, headers=headers).status_code == 200

    for request_id, priority in [
        ("first", None),
        ("normal-1", None),
        ("normal-2", None),
        ("normal-3", None),
        ("urgent", -10),
    ]:
        thread = threading.Thread(target=send, args=(request_id, priority))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    order = [entry["x_request_id"] for entry in engine_stats(daemon, "p.chat")["received"]]
    assert order[0] == "first" and order[1] == "urgent", order


def test_slo_rejects_at_once_what_cannot_meet_its_deadline(make_daemon):
    preset = fake_preset(
        "p", {"name": "chat", "max_concurrent_requests": 1, "env": {"FAKE_VLLM_LATENCY_MS": "200"}}
    )
    daemon, gateway = gateway_daemon(make_daemon, preset, policy="slo")
    gateway.wait_routable(MODEL)
    for _ in range(4):  # the queue's drain rate is measured from real dispatches
        assert gateway.chat(MODEL).status_code == 200

    def timed(i: int) -> tuple[int, float, str]:
        started = time.monotonic()
        answer = gateway.chat(MODEL, f"q{i}", headers={"X-SLO-TTFT-Ms": "1000"})
        code = answer.json().get("error", {}).get("code", "") if answer.status_code != 200 else ""
        return answer.status_code, time.monotonic() - started, code

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(timed, range(12)))
    served = [elapsed for code, elapsed, _ in results if code == 200]
    rejected = [(elapsed, why) for code, elapsed, why in results if code == 429]
    assert served and rejected, results
    assert all(why == "slo_unreachable" for _, why in rejected), rejected
    assert all(elapsed < 0.2 for elapsed, _ in rejected), rejected  # at once, not after a wait
    # The stand-in answers whole after its latency: its time to first byte is the total.
    assert max(served) < 1.0 + 0.25, served


def test_sigkill_of_one_replica_under_load_fails_no_request(make_daemon):
    daemon, gateway = _two_replicas(make_daemon, {"FAKE_VLLM_LATENCY_MS": "30"})
    victim = daemon.engine("p.a")
    with Load(gateway, clients=8) as load:
        time.sleep(1.0)
        os.kill(victim["pid"], signal.SIGKILL)
        exited = daemon.wait_for(
            lambda: [e for e in daemon.events("p.a") if e["type"] == "exited"], 10, "the exit"
        )
        retries_at_exit = _retries(gateway, "p.a")
        time.sleep(1.5)
    assert exited
    assert load.failures == [], load.failures[:3]
    assert load.done > 50
    # Once the daemon said it exited, no request went to it (none had to be retried off it).
    assert _retries(gateway, "p.a") == retries_at_exit


def _retries(gateway: Gateway, engine: str) -> float:
    total = 0.0
    for line in gateway.client.get("/metrics").text.splitlines():
        if line.startswith("sagellm_gateway_retries_total{") and f'engine="{engine}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_that_disconnects_mid_stream_cancels_the_engine_request(make_daemon):
    preset = fake_preset(
        "p",
        {
            "name": "chat",
            "env": {"FAKE_VLLM_STREAM_TOKENS": "500", "FAKE_VLLM_TOKEN_INTERVAL_MS": "20"},
        },
    )
    daemon, gateway = gateway_daemon(make_daemon, preset)
    gateway.wait_routable(MODEL)
    body = (
        b'{"model": "fake/model-1B", "stream": true,'
        b' "messages": [{"role": "user", "content": "go"}]}'
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-request-id: leaving\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        received = b""
        while received.count(b"data:") < 3:
            received += sock.recv(65536)
        closed_at = time.time()
    stats = daemon.wait_for(
        lambda: engine_stats(daemon, "p.chat")["cancelled"] or None, 5, "the engine to see it"
    )
    assert stats[0]["x_request_id"] == "leaving"
    assert stats[0]["t"] - closed_at < 0.1, stats[0]["t"] - closed_at


def test_sigkill_of_the_daemon_under_load_fails_no_request(make_daemon):
    daemon, gateway = _two_replicas(make_daemon, {"FAKE_VLLM_LATENCY_MS": "20"})
    pid = daemon.get("/v1/gateway").json()["pid"]
    with Load(gateway, clients=8) as load:
        time.sleep(0.5)
        daemon.stop(signal.SIGKILL)
        time.sleep(1.5)  # the gateway serves from its last table meanwhile
        served_while_away = load.done
        daemon.start()
        time.sleep(1.0)
    assert load.failures == [], load.failures[:3]
    assert load.done > served_while_away > 20
    assert daemon.get("/v1/gateway").json()["pid"] == pid


def test_api_keys_are_required_when_set(make_daemon):
    daemon, gateway = gateway_daemon(
        make_daemon, fake_preset("p", {"name": "chat"}), api_keys=["sk-one", "sk-two"]
    )
    keyed = httpx.Client(
        base_url=gateway.url, timeout=30, headers={"Authorization": "Bearer sk-two"}
    )

    def listed() -> bool:
        try:
            return any(e["id"] == MODEL for e in keyed.get("/v1/models").json()["data"])
        except httpx.TransportError:
            return False

    daemon.wait_for(listed, 30, "the model listed")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": daemon.token}):
        answer = gateway.chat(MODEL, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"]["code"] == "invalid_api_key"
    # The management token is no gateway key either.
    manage = {"Authorization": f"Bearer {daemon.token}"}
    assert gateway.client.get("/v1/models", headers=manage).status_code == 401
    ok = keyed.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_the_gateway_refuses_a_non_loopback_bind_without_keys(tmp_path, host):
    result = subprocess.run(
        [sys.executable, "-m", "sagellmd.gateway", "--host", host, "--port", str(free_port())],
        env={**os.environ, "SAGELLM_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "gateway.api_keys" in result.stderr and host in result.stderr


def test_a_preset_change_that_replaces_an_engine_fails_no_request(make_daemon):
    preset = fake_preset("p", {"name": "chat", "env": {"FAKE_VLLM_LATENCY_MS": "20"}})
    daemon, gateway = gateway_daemon(make_daemon, preset)
    gateway.wait_routable(MODEL)
    before = daemon.engine("p.chat")
    with Load(gateway, clients=6) as load:
        time.sleep(0.5)
        changed = fake_preset("p", {"name": "chat", "env": {"FAKE_VLLM_LATENCY_MS": "21"}})
        assert daemon.put("/v1/presets/p", changed).status_code == 200
        daemon.wait_for(
            lambda: (
                daemon.engine("p.chat")["pid"] not in (None, before["pid"])
                and daemon.engine("p.chat")["state"] == "ready"
            ),
            30,
            "the replacement",
        )
        time.sleep(1.0)
    assert load.failures == [], load.failures[:3]
    assert load.done > 30


def test_an_engine_that_dies_mid_stream_ends_the_stream_with_an_error_event(make_daemon):
    preset = fake_preset(
        "p",
        {
            "name": "chat",
            "env": {"FAKE_VLLM_STREAM_TOKENS": "500", "FAKE_VLLM_TOKEN_INTERVAL_MS": "20"},
        },
    )
    daemon, gateway = gateway_daemon(make_daemon, preset)
    gateway.wait_routable(MODEL)
    pid = daemon.engine("p.chat")["pid"]
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    lines = []
    started = time.monotonic()
    with gateway.client.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            lines.append(line)
            if len(lines) == 6:
                os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 10  # ended, never hung
    events = [line for line in lines if line.startswith("data: ")]
    assert '"engine_failed_mid_stream"' in events[-2], events[-3:]
    assert events[-1] == "data: [DONE]"


def test_a_stream_for_a_model_still_loading_gets_loading_comments_then_its_answer(make_daemon):
    daemon, gateway = gateway_daemon(make_daemon)
    preset = fake_preset("p", {"name": "chat", "env": {"FAKE_VLLM_STARTUP_DELAY": "4"}})
    assert daemon.put("/v1/presets/p", preset).status_code == 200

    def starting() -> bool:
        try:
            return any(
                engine["state"] == "starting"
                for entry in gateway.models()
                for engine in entry["engines"]
            )
        except (httpx.TransportError, ValueError, KeyError):
            return False

    daemon.wait_for(starting, 20, "the gateway to know the engine is starting")
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    comments = [line for line in lines if line.startswith(": loading p.chat ")]
    assert comments, lines[:5]
    assert lines.index(comments[-1]) < lines.index("data: [DONE]")
    assert any(line.startswith("data: {") for line in lines)
