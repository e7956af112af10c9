"""Owns the tests of the stand-in engine's load knobs: latency, streams, failures, stats.

Each test runs tests/fixtures/fake_vllm.py as a real process on a free port (the Launcher
of test_fake_vllm.py) and talks to it over real loopback HTTP.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.unit.test_fake_vllm import (
    HOST,
    START_TIMEOUT_S,
    FakeEngine,
    Launcher,
    free_port,
    wait_for,
)

CHAT = {"model": "facebook/opt-125m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.cleanup()


def stats(engine: FakeEngine) -> dict[str, Any]:
    answer = engine.get("/fake/stats")
    assert answer is not None and answer.status_code == 200
    return dict(answer.json())


def gauges(engine: FakeEngine) -> dict[str, float]:
    answer = engine.get("/metrics")
    assert answer is not None and answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in answer.text.splitlines():
        if line.startswith("vllm:"):
            name_labels, value = line.rsplit(" ", 1)
            name, labels = name_labels.split("{", 1)
            assert 'model_name="facebook/opt-125m"' in labels
            values[name] = float(value)
    return values


def raw_request(engine: FakeEngine, body: dict[str, Any], request_id: str) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection((HOST, engine.port), timeout=START_TIMEOUT_S)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (request_id.encode(), len(payload), payload)
    )
    return sock


def test_in_flight_requests_are_counted_and_reported_as_vllm_gauges(start: Launcher) -> None:
    # Every request stays in flight for 0.6 s; the engine runs at most 3 of them.
    argv = [*start.flags(free_port()), "--max-num-seqs", "3"]
    engine = start(argv, {"FAKE_VLLM_LATENCY_MS": "600"})
    engine.wait_healthy()
    assert gauges(engine) == {
        "vllm:num_requests_running": 0.0,
        "vllm:num_requests_waiting": 0.0,
        "vllm:kv_cache_usage_perc": 0.0,
    }
    statuses: list[int] = []
    took: list[float] = []

    def ask(index: int) -> None:
        begun = time.monotonic()
        body = {**CHAT, "priority": index} if index % 2 else CHAT
        headers = {"X-Request-Id": f"req-{index}", "X-Priority": "7"}
        answer = httpx.post(
            engine.url + "/v1/chat/completions", json=body, headers=headers, timeout=5
        )
        statuses.append(answer.status_code)
        took.append(time.monotonic() - begun)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    wait_for(lambda: True if stats(engine)["inflight"] == 5 else None)
    assert gauges(engine) == {
        "vllm:num_requests_running": 3.0,
        "vllm:num_requests_waiting": 2.0,
        "vllm:kv_cache_usage_perc": 1.0,
    }
    for thread in threads:
        thread.join()

    assert statuses == [200] * 5
    assert min(took) >= 0.55
    final = stats(engine)
    assert (final["inflight"], final["max_inflight"], final["requests"]) == (0, 5, 5)
    assert final["cancelled"] == []
    received = {entry["x_request_id"]: entry for entry in final["received"]}
    assert set(received) == {f"req-{i}" for i in range(5)}
    assert received["req-1"]["priority"] == 1 and received["req-2"]["priority"] == "7"
    assert {entry["path"] for entry in final["received"]} == {"/v1/chat/completions"}
    assert {entry["model"] for entry in final["received"]} == {"facebook/opt-125m"}
    assert all(abs(entry["t"] - time.time()) < 30 for entry in final["received"])
    assert gauges(engine)["vllm:num_requests_running"] == 0.0


def test_stream_has_the_tokens_at_the_interval_on_a_kept_connection(start: Launcher) -> None:
    engine = start(env={"FAKE_VLLM_STREAM_TOKENS": "6", "FAKE_VLLM_TOKEN_INTERVAL_MS": "60"})
    engine.wait_healthy()
    conn = http.client.HTTPConnection(HOST, engine.port, timeout=START_TIMEOUT_S)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    conn.request("POST", "/v1/chat/completions", json.dumps(body))
    answer = conn.getresponse()
    assert answer.status == 200
    assert answer.getheader("Content-Type", "").startswith("text/event-stream")
    assert answer.getheader("Transfer-Encoding") == "chunked"
    arrivals: list[float] = []
    events: list[Any] = []
    for line in answer:
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic())
            data = line.removeprefix(b"data: ").strip()
            events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    sock = conn.sock
    assert events[-1] == "[DONE]"
    tokens = [e for e in events[:-1] if e["choices"]]
    assert len(tokens) == 6
    assert tokens[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"]["content"] for e in tokens)
    assert text == "fake completion of 2 chars fake"
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 5 + ["stop"]
    assert events[-2]["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}
    # Five gaps of 60 ms between the six token chunks.
    assert arrivals[5] - arrivals[0] >= 0.28

    # The same socket serves the next request: keep-alive after a chunked stream.
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": 2}))
    second = conn.getresponse()
    assert json.loads(second.read())["choices"][0]["text"] == "fake completion"
    assert second.getheader("Content-Length") is not None
    assert conn.sock is sock and sock is not None
    conn.close()


def test_a_closed_stream_is_recorded_as_cancelled_within_100_ms(start: Launcher) -> None:
    engine = start(env={"FAKE_VLLM_STREAM_TOKENS": "100000", "FAKE_VLLM_TOKEN_INTERVAL_MS": "20"})
    engine.wait_healthy()
    sock = raw_request(engine, {**CHAT, "stream": True}, "stream-1")
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(65536)
    assert stats(engine)["inflight"] == 1
    # Taken before the close: the fake may notice before this process runs again.
    closing = time.time()
    sock.close()
    cancelled = wait_for(lambda: stats(engine)["cancelled"] or None)
    assert [entry["x_request_id"] for entry in cancelled] == ["stream-1"]
    assert 0 <= cancelled[0]["t"] - closing < 0.1
    wait_for(lambda: True if stats(engine)["inflight"] == 0 else None)


def test_a_client_gone_during_the_latency_is_cancelled(start: Launcher) -> None:
    engine = start(env={"FAKE_VLLM_LATENCY_MS": "5000"})
    engine.wait_healthy()
    sock = raw_request(engine, CHAT, "slow-1")
    wait_for(lambda: True if stats(engine)["inflight"] == 1 else None)
    closing = time.time()
    sock.close()
    cancelled = wait_for(lambda: stats(engine)["cancelled"] or None)
    assert cancelled[0]["x_request_id"] == "slow-1"
    assert 0 <= cancelled[0]["t"] - closing < 0.1
    assert stats(engine)["inflight"] == 0


def test_fail_fraction_fails_every_nth_request_with_500(start: Launcher) -> None:
    engine = start(env={"FAKE_VLLM_FAIL_FRACTION": "0.5"})
    engine.wait_healthy()
    answers = [engine.post("/v1/chat/completions", json=CHAT) for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 500, 200, 500, 200, 500]
    assert answers[1].json()["error"]["type"] == "InternalServerError"
    assert stats(engine)["requests"] == 6
    assert engine.health_status() == 200


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FAKE_VLLM_FAIL_FRACTION": "1.5"}, "FAKE_VLLM_FAIL_FRACTION must be between 0 and 1"),
        ({"FAKE_VLLM_LATENCY_MS": "soon"}, "FAKE_VLLM_LATENCY_MS must be a number"),
        ({"FAKE_VLLM_STREAM_TOKENS": "2.5"}, "FAKE_VLLM_STREAM_TOKENS must be an integer"),
    ],
)
def test_bad_load_settings_exit_with_the_variable_named(
    start: Launcher, env: dict[str, str], message: str
) -> None:
    engine = start(env=env)
    assert engine.proc.wait(timeout=START_TIMEOUT_S) != 0
    assert message in engine.err()


def test_embeddings_are_deterministic_unit_vectors(start: Launcher) -> None:
    engine = start()
    engine.wait_healthy()
    # The official client asks for base64 by default and decodes it.
    client = OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0)
    first = client.embeddings.create(model="facebook/opt-125m", input=["a cat", "a dog"])
    assert [item.index for item in first.data] == [0, 1]
    vectors = [item.embedding for item in first.data]
    assert [len(v) for v in vectors] == [16, 16]
    assert vectors[0] != vectors[1]
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)

    plain = engine.post("/v1/embeddings", json={"input": "a cat", "dimensions": 16})
    assert plain.status_code == 200
    assert plain.json()["object"] == "list" and plain.json()["model"] == "facebook/opt-125m"
    [item] = plain.json()["data"]
    assert item["object"] == "embedding"
    assert item["embedding"] == pytest.approx(vectors[0], abs=1e-6)
    short = engine.post("/v1/embeddings", json={"input": [[1, 2, 3]], "dimensions": 4})
    assert len(short.json()["data"][0]["embedding"]) == 4
    bad = engine.post("/v1/embeddings", json={"input": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert stats(engine)["max_inflight"] == 1
