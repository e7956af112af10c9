"""Real engines behind the gateway: the MiniLM embedding engine and a llama.cpp LLM on a tiny
GGUF model, asked through the gateway by name, alias and engine id, streaming included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.integration.conftest import free_port
from tests.integration.test_gateway_requests import Gateway
from tests.integration.test_llamacpp_server import TINY_GGUF, llamacpp_python

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_the_real_embedding_engine_answers_through_the_gateway(make_daemon):
    daemon = make_daemon(gateway={"enabled": True, "port": free_port()})
    gateway = Gateway(daemon)
    result = daemon.cli("preset", "set", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    entry = daemon.wait_state("minilm-cpu.embed", "ready", timeout=180)
    gateway.wait_routable(MINILM)
    texts = ["sagellm keeps engines running", "a second, different sentence"]
    direct = httpx.post(
        f"http://127.0.0.1:{entry['port']}/v1/embeddings", json={"input": texts}, timeout=60
    ).json()["data"]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    for name in (MINILM, "minilm-cpu.embed"):
        through = client.embeddings.create(model=name, input=texts).data
        for ours, theirs in zip(through, direct, strict=True):
            assert np.allclose(ours.embedding, theirs["embedding"], atol=1e-6)


def test_a_llama_cpp_engine_chats_through_the_gateway_streaming_included(make_daemon, tmp_path):
    python = llamacpp_python()
    model = tmp_path / "tiny.gguf"
    subprocess.run([python, str(TINY_GGUF), str(model)], check=True, timeout=60)
    daemon = make_daemon(
        start=False,
        runtimes={"llama-cpp": {"command": [python, "-m", "llama_cpp.server"]}},
        gateway={"enabled": True, "port": free_port()},
    )
    daemon.start()
    spec = {
        "kind": "llm",
        "runtime": "llama-cpp",
        "model": str(Path(model)),
        "aliases": ["tiny"],
        "extra_args": ["--n_ctx", "512", "--n_threads", "1"],
    }
    assert daemon.put("/v1/engines/chat", spec).status_code in (200, 201)
    daemon.wait_state("chat", "ready", timeout=60)
    gateway = Gateway(daemon)
    gateway.wait_routable("tiny")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "hello tiny model"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        client.chat.completions.create(model="chat", messages=messages, max_tokens=8, stream=True)
    )
    assert len(chunks) > 1
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
