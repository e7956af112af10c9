"""The API port's relay to the gateway (`/v1/gateway/openai/...`, the Playground's way in):
streamed chunk by chunk, a client gone closes the upstream request, 409 with the gateway off."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from tests.integration.conftest import Daemon, fake_preset
from tests.integration.test_gateway_requests import (
    MODEL,
    Gateway,
    engine_stats,
    gateway_daemon,
)
from tests.integration.test_ui_auth import signed_in

RELAY = "/v1/gateway/openai/v1"
SLOW = {"FAKE_VLLM_STREAM_TOKENS": "12", "FAKE_VLLM_TOKEN_INTERVAL_MS": "80"}


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def relay_ready(daemon: Daemon) -> None:
    def routable() -> bool:
        answer = daemon.get(f"{RELAY}/models", headers=daemon.auth())
        return answer.status_code == 200 and any(
            entry["id"] == MODEL and any(e["state"] == "ready" for e in entry["engines"])
            for entry in answer.json()["data"]
        )

    daemon.wait_for(routable, 30, "the model routable through the relay")


def test_the_relay_streams_a_chat_completion_chunk_by_chunk(make_daemon):
    daemon, _ = gateway_daemon(make_daemon, fake_preset("p", {"name": "chat", "env": SLOW}))
    relay_ready(daemon)
    arrivals: list[float] = []
    events: list[str] = []
    started = time.monotonic()
    with daemon.client.stream(
        "POST", f"{RELAY}/chat/completions", json=chat_body(stream=True), headers=daemon.auth()
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                arrivals.append(time.monotonic() - started)
    assert events[-1] == "[DONE]"
    tokens = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert len([t for t in tokens if t]) >= 10
    # Chunk by chunk: the first token arrived long before the last (12 tokens x 80 ms).
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals
    whole = daemon.client.post(f"{RELAY}/chat/completions", json=chat_body(), headers=daemon.auth())
    assert whole.status_code == 200 and whole.json()["object"] == "chat.completion"


def test_the_relay_passes_gateway_errors_and_takes_the_session(make_daemon):
    daemon, _ = gateway_daemon(make_daemon, fake_preset("p", {"name": "chat"}))
    relay_ready(daemon)
    missing = daemon.client.post(
        f"{RELAY}/chat/completions", json=chat_body(model="nope"), headers=daemon.auth()
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"  # the gateway's OpenAI shape
    client, csrf = signed_in(daemon)
    refused = client.post(f"{RELAY}/chat/completions", json=chat_body())
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_refused"
    answer = client.post(
        f"{RELAY}/chat/completions", json=chat_body(), headers={"X-Sagellm-CSRF": csrf}
    )
    assert answer.status_code == 200, answer.text
    assert daemon.client.post(f"{RELAY}/chat/completions", json=chat_body()).status_code == 401
    # The model list too needs the token (or the session): the relay carries the gateway key.
    assert daemon.get(f"{RELAY}/models").status_code == 401
    assert client.get(f"{RELAY}/models").status_code == 200
    not_json = daemon.client.post(f"{RELAY}/embeddings", content=b"[1, 2]", headers=daemon.auth())
    assert not_json.status_code == 400


def test_a_client_leaving_the_relay_cancels_the_engine_request(make_daemon):
    env = {"FAKE_VLLM_STREAM_TOKENS": "500", "FAKE_VLLM_TOKEN_INTERVAL_MS": "20"}
    daemon, _ = gateway_daemon(make_daemon, fake_preset("p", {"name": "chat", "env": env}))
    relay_ready(daemon)
    with send_raw(daemon, chat_body(stream=True), "leaving") as sock:
        received = b""
        while received.count(b"data:") < 3:
            received += sock.recv(65536)
        closed_at = time.time()
    stats = daemon.wait_for(
        lambda: engine_stats(daemon, "p.chat")["cancelled"] or None, 5, "the engine to see it"
    )
    assert stats[0]["x_request_id"] == "leaving"
    assert stats[0]["t"] - closed_at < 1.0, stats[0]["t"] - closed_at


def send_raw(daemon: Daemon, body: dict[str, Any], request_id: str) -> socket.socket:
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    sock.sendall(
        f"POST {RELAY}/chat/completions HTTP/1.1\r\nhost: x\r\n"
        f"authorization: Bearer {daemon.token}\r\ncontent-type: application/json\r\n"
        f"x-request-id: {request_id}\r\ncontent-length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return sock


def test_a_client_leaving_while_queued_never_reaches_the_engine(make_daemon):
    env = {"FAKE_VLLM_STREAM_TOKENS": "60", "FAKE_VLLM_TOKEN_INTERVAL_MS": "25"}
    preset = fake_preset("p", {"name": "chat", "env": env, "max_concurrent_requests": 1})
    daemon, gateway = gateway_daemon(make_daemon, preset)
    relay_ready(daemon)

    def occupy() -> None:
        Gateway(daemon).chat(MODEL, headers={"x-request-id": "first"}, stream=True)

    first = threading.Thread(target=occupy)
    first.start()
    daemon.wait_for(lambda: engine_stats(daemon, "p.chat")["inflight"] == 1, 10, "the first")
    with send_raw(daemon, chat_body(stream=True), "leaver"):
        time.sleep(0.5)  # queued behind the first (the engine's cap is 1)
    first.join(20)
    time.sleep(1.0)  # a request still queued in the gateway would now reach the engine
    seen = [r["x_request_id"] for r in engine_stats(daemon, "p.chat")["received"]]
    assert "first" in seen and "leaver" not in seen, seen


def test_the_relay_answers_409_with_the_gateway_disabled(daemon: Daemon):
    for method, path in (("POST", "chat/completions"), ("POST", "embeddings"), ("GET", "models")):
        body = chat_body() if method == "POST" else None
        answer = daemon.client.request(method, f"{RELAY}/{path}", json=body, headers=daemon.auth())
        assert answer.status_code == 409, (path, answer.text)
        assert answer.json()["error"] == {
            "code": "conflict",
            "message": "the gateway is disabled; set gateway.enabled: true in config.yaml",
            "details": {},
        }


def test_the_relay_answers_502_when_the_gateway_is_not_there(make_daemon):
    # The port is taken but not listening: the gateway cannot bind it, a connect is refused.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        daemon = make_daemon(gateway={"enabled": True, "port": port})
        answer = daemon.get(f"{RELAY}/models", headers=daemon.auth())
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "gateway_unreachable"
        assert f"127.0.0.1:{port}" in error["message"] and "sagellm gateway" in error["message"]
