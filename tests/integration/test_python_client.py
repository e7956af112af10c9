"""The Python client (sagellmd.client) against a real daemon, its real gateway and stand-in
engines: inference through the gateway, management through the API, one error type."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from sagellmd.client import Client, ClientError
from tests.integration.conftest import Daemon, fake_preset, free_port

MODEL = "fake/model-1B"
EMBEDDER = "fake/embedder"
SICK = {"FAKE_VLLM_HEALTH": "fail"}


def chat_and_embed_preset(name: str = "p") -> dict[str, Any]:
    return fake_preset(
        name,
        {"name": "chat", "aliases": ["local"]},
        {"name": "embed", "kind": "embedding", "runtime": "vllm", "model": EMBEDDER},
    )


def client_of(daemon: Daemon, **kwargs: Any) -> Client:
    """A Client that finds the daemon as an application would: SAGELLM_URL, the home's token."""
    return Client(url=daemon.url, token=daemon.token, **kwargs)


@pytest.fixture
def gateway_daemon(make_daemon: Any) -> Daemon:
    return make_daemon(gateway={"enabled": True, "port": free_port()})


def test_inference_goes_through_the_gateway_and_picks_the_model_of_each_kind(
    gateway_daemon: Daemon,
):
    """And a model it does not know is a client error that lists the routable names."""
    daemon = gateway_daemon
    with client_of(daemon) as client:
        answer = client.apply_preset(chat_and_embed_preset())
        assert answer["generation"] == 1 and answer["verdict"] == "p.chat, p.embed ready"
        assert client.gateway_url == f"http://127.0.0.1:{daemon.config['gateway']['port']}"

        results = client.generate(["a", "bb", "ccc"], max_tokens=10)
        assert [r["text"] for r in results] == [f"fake completion of {n} chars" for n in (1, 2, 3)]
        assert {r["finish_reason"] for r in results} == {"stop"}
        assert results[0]["tokens_used"] == {
            "prompt_tokens": 1,
            "completion_tokens": 5,
            "total_tokens": 6,
        }
        assert client.generate("xy", model="local")[0]["text"] == "fake completion of 2 chars"

        reply = client.chat("hello")
        assert reply["text"] == "fake completion of 5 chars" and reply["finish_reason"] == "stop"
        cut = client.chat([{"role": "user", "content": "hello"}], model="p.chat", max_tokens=2)
        assert cut == {
            "text": "fake completion",
            "finish_reason": "length",
            "tokens_used": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }

        vectors = client.embed(["one", "two"])
        assert vectors["model_id"] == EMBEDDER and len(vectors["vectors"]) == 2
        assert vectors["dim"] == len(vectors["vectors"][0]) > 0
        assert vectors["vectors"][0] != vectors["vectors"][1]
        assert client.embed("one", model="p.embed")["vectors"] == vectors["vectors"][:1]

        pieces = list(client.stream_generate("abc"))
        assert len(pieces) > 1 and "".join(pieces) == "fake completion of 3 chars"
        pieces = list(client.stream_chat("hello", max_tokens=3))
        assert len(pieces) == 3 and "".join(pieces) == "fake completion of"
    # Every request went through the gateway: it counted them, per model and engine.
    port = daemon.config["gateway"]["port"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    counted = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sagellm_gateway_requests_total{")
    }
    assert sum(v for k, v in counted.items() if 'engine="p.chat"' in k) == 8
    assert sum(v for k, v in counted.items() if 'engine="p.embed"' in k) == 2
    # The same engines, the other side: an unknown model is a client error listing the
    # routable names (once a test of its own, which started the same daemon and engines).
    with client_of(daemon) as client:
        for call in (
            lambda: client.chat("hi", model="nope"),
            lambda: client.generate(["a"], model="nope"),
            lambda: list(client.stream_chat("hi", model="nope")),
            lambda: client.embed(["a"], model="nope"),
        ):
            with pytest.raises(ClientError) as caught:
                call()
            error = caught.value
            assert error.status == 404 and error.code == "model_not_found"
            assert "'nope'" in error.message
            for name in (MODEL, "p.chat", "local", EMBEDDER, "p.embed"):
                assert name in error.message
        # A chat engine does not embed: the gateway says what it serves.
        with pytest.raises(ClientError) as caught:
            client.embed(["a"], model="p.chat")
        assert caught.value.status == 404 and caught.value.code == "endpoint_not_served"


def test_two_models_of_one_kind_must_be_named(gateway_daemon: Daemon):
    preset = fake_preset("p", {"name": "a"}, {"name": "b", "model": "fake/other-1B"})
    with client_of(gateway_daemon) as client:
        client.apply_preset(preset)
        with pytest.raises(ClientError) as caught:
            client.chat("hi")
        assert caught.value.code == "ambiguous_model"
        assert MODEL in caught.value.message and "fake/other-1B" in caught.value.message
        with pytest.raises(ClientError) as caught:
            client.embed("hi")
        assert caught.value.code == "no_model"
        assert client.chat("hi", model="fake/other-1B")["text"]


def test_management_calls_and_yaml_documents(gateway_daemon: Daemon):
    document = """
version: 1
name: y
engines:
  - {name: chat, model: fake/model-1B}
"""
    with client_of(gateway_daemon) as client:
        answer = client.apply_preset(document, wait=False)
        assert answer["preset"] == "y" and "verdict" not in answer
        entry = client.wait_ready("y.chat", timeout=30)
        assert entry["state"] == "ready" and entry["id"] == "y.chat"
        # wait_ready also waited for the gateway's route: the first request succeeds.
        assert client.chat("hi", model="y.chat")["text"] == "fake completion of 2 chars"
        assert [e["id"] for e in client.engines()] == ["y.chat"]
        assert client.engine("y.chat")["port"] == entry["port"]
        status = client.status()
        assert status["generation"] == 1 and status["gateway"]["enabled"] is True
        with pytest.raises(ClientError) as caught:
            client.engine("nope")
        assert caught.value.status == 404 and caught.value.code == "not_found"
        with pytest.raises(ClientError) as caught:
            client.wait_ready("nope", timeout=5)
        assert caught.value.status == 404


def test_apply_preset_wait_raises_with_the_rollout_reason(gateway_daemon: Daemon):
    sick = fake_preset("p", {"name": "bad", "startup_timeout_s": 2, "env": SICK})
    with client_of(gateway_daemon) as client:
        with pytest.raises(ClientError) as caught:
            client.apply_preset(sick, timeout=30)
        error = caught.value
        assert error.code == "rollout_failed" and error.status is None
        assert "generation 1 failed: p.bad not ready within startup_timeout_s=2" in error.message
        assert "rolled it back (generation 2 undoes it)" in error.message
        with pytest.raises(ClientError) as caught:
            client.apply_preset(sick, timeout=30, rollback=False)
        assert "the failed state is kept" in caught.value.message
        # A document the daemon refuses: its message, its status.
        with pytest.raises(ClientError) as caught:
            client.apply_preset({"version": 1, "name": "q", "engines": [{"name": "x"}]})
        assert caught.value.status == 400 and "model" in caught.value.message


def test_unreachable_daemon_and_gateway_say_where_and_how_to_start(make_daemon: Any):
    port = free_port()
    with Client(url=f"http://127.0.0.1:{port}", token="t") as client:
        with pytest.raises(ClientError) as caught:
            client.status()
    error = caught.value
    assert error.unreachable and error.code == "daemon_unreachable" and error.status is None
    assert f"127.0.0.1:{port}" in error.message and "sagellmd" in error.message
    # A daemon without a gateway: management works, inference says why it cannot.
    daemon = make_daemon()
    with client_of(daemon) as client:
        assert client.engines() == []
        with pytest.raises(ClientError) as caught:
            client.chat("hi", model=MODEL)
        assert caught.value.code == "no_gateway" and "gateway.enabled" in caught.value.message
    with client_of(daemon, gateway_url=f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ClientError) as caught:
            client.generate("hi", model=MODEL)
        assert caught.value.code == "gateway_unreachable" and str(port) in caught.value.message


def test_a_refused_token_or_key_says_where_it_came_from_and_keys_come_from_the_environment(
    make_daemon: Any, monkeypatch: pytest.MonkeyPatch
):
    daemon = make_daemon(gateway={"enabled": True, "port": free_port(), "api_keys": ["k1"]})
    with Client(url=daemon.url, token="wrong") as client:
        with pytest.raises(ClientError) as caught:
            client.apply_preset("p", wait=False)
        assert caught.value.status == 401 and caught.value.code == "unauthorized"
        assert "the client sent the token given as Client(token=...)" in caught.value.message
    with client_of(daemon) as client:
        client.apply_preset(fake_preset("p", {"name": "chat"}), wait=False)
        client.wait_ready("p.chat", timeout=30)
        with pytest.raises(ClientError) as caught:
            client.chat("hi", model=MODEL)
        assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
        assert "Client(api_key=...) or SAGELLM_API_KEY" in caught.value.message
    monkeypatch.setenv("SAGELLM_API_KEY", "k1")
    with client_of(daemon) as client:
        assert client.chat("hi", model=MODEL)["text"] == "fake completion of 2 chars"


def test_a_stream_left_early_is_cancelled_and_a_broken_one_raises(gateway_daemon: Daemon):
    slow = {"FAKE_VLLM_STREAM_TOKENS": "400", "FAKE_VLLM_TOKEN_INTERVAL_MS": "25"}
    daemon = gateway_daemon
    with client_of(daemon) as client:
        client.apply_preset(fake_preset("p", {"name": "chat", "env": slow}))
        engine = client.engine("p.chat")
        stats = f"http://127.0.0.1:{engine['port']}/fake/stats"
        for count, _ in enumerate(client.stream_chat("hello"), 1):
            if count == 3:
                break
        # Leaving the loop closed the stream: the gateway cancelled the engine's request.
        daemon.wait_for(
            lambda: httpx.get(stats, timeout=5).json()["cancelled"], 10, "the cancellation"
        )
        pieces = client.stream_chat("hello")
        assert next(pieces) and next(pieces)
        os.kill(engine["pid"], signal.SIGKILL)
        with pytest.raises(ClientError) as caught:
            for _ in pieces:
                pass
        assert caught.value.code == "engine_failed_mid_stream", caught.value
        assert "ended the stream" in caught.value.message


def test_wait_ready_ends_with_the_engines_failure(gateway_daemon: Daemon):
    # The stand-in exits 2 at once on a flag it does not know, as vLLM does.
    dies = {"name": "dies", "restart": "never", "extra_args": ["--no-such-flag"]}
    slow = {"name": "slow", "env": {"FAKE_VLLM_STARTUP_DELAY": "60"}}
    with client_of(gateway_daemon) as client:
        client.apply_preset(fake_preset("p", dies, slow), wait=False, rollback=False)
        with pytest.raises(ClientError) as caught:
            client.wait_ready("p.dies", timeout=30)
        assert caught.value.code == "engine_failed"
        assert caught.value.message.startswith("engine p.dies failed: ")
        assert "sagellm engine logs p.dies" in caught.value.message
        with pytest.raises(ClientError) as caught:
            client.wait_ready("p.slow", timeout=1)
        assert caught.value.code == "timeout"
        assert "p.slow was not ready within 1 s: it is starting" in caught.value.message
