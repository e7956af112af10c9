"""A llama-cpp engine run by a real daemon: the tiny GGUF model answers chat on its own port.

It needs an interpreter with ``llama-cpp-python[server]`` and ``gguf`` (see docs/dev-llamacpp.md),
named by SAGELLM_LLAMACPP_PYTHON; without one the tests skip and say why.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Daemon, free_port
from tests.integration.openai_stream import stream_chat
from tests.integration.test_llamacpp_server import TINY_GGUF, llamacpp_python

READY_TIMEOUT = 60.0
CHAT = {
    "model": "chat",
    "messages": [{"role": "user", "content": "hello tiny model"}],
    "max_tokens": 8,
    "temperature": 0.8,
    "seed": 1,
}


@pytest.fixture
def llama_daemon(make_daemon: Callable[..., Daemon], tmp_path: Path) -> tuple[Daemon, Path]:
    """A daemon whose llama-cpp runtime is the llama venv's python, and the tiny model."""
    python = llamacpp_python()
    model = tmp_path / "tiny.gguf"
    subprocess.run([python, str(TINY_GGUF), str(model)], check=True, timeout=60)
    daemon = make_daemon(
        start=False,
        runtimes={"llama-cpp": {"command": [python, "-m", "llama_cpp.server"]}},
    )
    # llama_cpp.server listens on $PORT/$HOST over its flags: the runtime must drop them.
    daemon.extra_env.update({"PORT": str(free_port()), "HOST": "0.0.0.0"})
    daemon.start()
    return daemon, model


def _chat(port: int) -> dict[str, Any]:
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_daemon_runs_restarts_and_removes_a_llama_cpp_engine(
    llama_daemon: tuple[Daemon, Path],
):
    daemon, model = llama_daemon
    spec = {
        "kind": "llm",
        "runtime": "llama-cpp",
        "model": str(model),
        "extra_args": ["--n_ctx", "512", "--n_threads", "1"],
    }
    answer = daemon.put("/v1/engines/chat", spec)
    assert answer.status_code in (200, 201), answer.text
    first = daemon.wait_state("chat", "ready", timeout=READY_TIMEOUT)
    port = first["port"]
    # A CPU runtime: no GPU reserved although two (simulated) GPUs are free.
    assert first["gpus"] == [] and first["gpu_memory_gb"] is None

    assert first["address"] == {
        "base_url": f"http://127.0.0.1:{port}/v1",
        "models": ["chat"],
        "endpoints": ["/v1/chat/completions", "/v1/completions"],
    }
    models = httpx.get(f"{first['address']['base_url']}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["chat"]
    body = _chat(port)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert 0 < body["usage"]["completion_tokens"] <= CHAT["max_tokens"]
    chunks = stream_chat(f"http://127.0.0.1:{port}", CHAT)
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    os.kill(first["pid"], signal.SIGKILL)
    second = daemon.wait_for(
        lambda: (e := daemon.engine("chat"))["state"] == "ready" and e["pid"] != first["pid"] and e,
        READY_TIMEOUT,
        "the llama-cpp engine restarted and ready",
    )
    assert second["restarts"] == 1 and second["port"] == port
    assert _chat(port)["choices"][0]["message"]["role"] == "assistant"

    assert daemon.delete("/v1/engines/chat").status_code in (200, 202, 204)
    daemon.wait_for(
        lambda: daemon.get("/v1/engines/chat").status_code == 404,
        30,
        "the engine removed",
    )
    pid = second["pid"]
    daemon.wait_for(lambda: not _alive(pid), 15, f"pid {pid} gone")
    stops = [e for e in daemon.events("chat") if e["type"] in ("stopped", "exited")]
    # The SIGTERM it died of after the daemon asked it to stop is a clean stop, not a crash.
    assert stops[-1]["type"] == "stopped", stops


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- without llama-cpp-python: what the daemon says about models it cannot run ------------


def test_a_model_that_names_no_gguf_file_is_refused_at_once(daemon: Daemon):
    answer = daemon.put(
        "/v1/engines/chat",
        {"runtime": "llama-cpp", "model": "Qwen/Qwen2.5-0.5B-Instruct-GGUF"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_spec"
    assert error["message"].startswith("chat.model: ")
    assert "REPO:FILE.gguf or REPO:QUANT" in error["message"]
    assert daemon.get("/v1/engines/chat").status_code == 404


def test_a_gguf_file_not_on_disk_fails_naming_the_download(make_daemon, tmp_path: Path):
    daemon = make_daemon(start=False)
    daemon.extra_env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    daemon.start()
    model = "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    # rollback=false: this is about the message, not about reverting the failed change.
    spec = {"runtime": "llama-cpp", "model": model}
    assert daemon.put("/v1/engines/chat?rollback=false", spec).is_success
    failed = daemon.wait_state("chat", "failed")
    assert (
        "sagellm model download Qwen/Qwen2.5-0.5B-Instruct-GGUF --allow-patterns"
        in (failed["message"])
    )
    assert str(tmp_path / "empty-cache") in failed["message"]
