"""The seam end to end: a real daemon, the real gateway it supervises, a stand-in engine.
Requests by alias reach the engine; the gateway's reports reach `sagellm status`."""

from __future__ import annotations

import httpx

from tests.integration.conftest import fake_preset, free_port


def test_a_request_by_alias_goes_through_the_supervised_gateway(make_daemon):
    port = free_port()
    daemon = make_daemon(gateway={"enabled": True, "port": port})
    preset = fake_preset("p", {"name": "chat", "label": "fast", "aliases": ["qwen"]})
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    daemon.wait_state("p.chat", "ready")
    daemon.wait_for(lambda: daemon.get("/v1/gateway").json()["state"] == "ready", 20, "the gateway")
    gateway = f"http://127.0.0.1:{port}"

    def answered() -> httpx.Response | None:
        response = httpx.post(
            f"{gateway}/v1/chat/completions",
            json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        return response if response.status_code == 200 else None

    response = daemon.wait_for(answered, 20, "a chat answer through the gateway")
    assert response.json()["model"] == "fake/model-1B"  # rewritten to the served name
    models = httpx.get(f"{gateway}/v1/models", timeout=5).json()
    assert "qwen" in str(models) and "p.chat" in str(models)

    def reported() -> dict | None:
        status = daemon.get("/v1/status").json()
        entry = next(e for e in status["engines"] if e["id"] == "p.chat")
        return status if entry["inflight"] is not None else None

    status = daemon.wait_for(reported, 10, "the gateway's activity report in status")
    assert status["gateway"]["totals"]["requests"] >= 1
    assert status["gateway"]["reported_at"] is not None
