"""llama-cpp-python's OpenAI server as a real process serving the tiny test GGUF model.

It needs an interpreter with ``llama-cpp-python[server]`` and ``gguf`` (a separate venv, see
docs/dev-llamacpp.md), named by SAGELLM_LLAMACPP_PYTHON; without it the tests skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.integration.openai_stream import stream_chat

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_GGUF = REPO_ROOT / "tests" / "fixtures" / "tiny_gguf.py"
READY_TIMEOUT = 60.0
MODEL_ALIAS = "tiny-llama"


def llamacpp_python() -> str:
    """The interpreter that has llama_cpp.server and gguf, or skip saying how to get one."""
    python = os.environ.get("SAGELLM_LLAMACPP_PYTHON")
    if not python:
        pytest.skip("SAGELLM_LLAMACPP_PYTHON is not set (see docs/dev-llamacpp.md)")
    probe = subprocess.run(
        [python, "-c", "import llama_cpp.server, gguf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{python} cannot import llama_cpp.server and gguf: {last}")
    return python


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(python: str, model: Path, workdir: Path) -> Iterator[LlamaServer]:
    """Start llama_cpp.server on a free port, wait until it answers, and always stop it."""
    port = free_port()
    log = workdir / f"server-{port}.log"
    argv = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "512",
        "--n_threads",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {process.returncode}:\n{server.log_text()}")
            try:
                # The server has no /health; it binds only after the model has loaded.
                if httpx.get(f"{server.base_url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in {READY_TIMEOUT}s:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The llama-cpp interpreter and the tiny GGUF model it wrote."""
    python = llamacpp_python()
    model = tmp_path_factory.mktemp("llamacpp") / "tiny.gguf"
    subprocess.run([python, str(TINY_GGUF), str(model)], check=True, timeout=60)
    return python, model


@pytest.fixture(scope="module")
def llama_server(tiny_model: tuple[str, Path]) -> Iterator[LlamaServer]:
    python, model = tiny_model
    with running_server(python, model, model.parent) as server:
        yield server


CHAT = {
    "model": MODEL_ALIAS,
    "messages": [{"role": "user", "content": "hello tiny model"}],
    "max_tokens": 16,
    "temperature": 0.8,
    "seed": 1,
}


def test_models_lists_the_alias(llama_server: LlamaServer):
    answer = httpx.get(f"{llama_server.base_url}/v1/models", timeout=10)
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == [MODEL_ALIAS]


def test_chat_completion(llama_server: LlamaServer):
    answer = httpx.post(f"{llama_server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL_ALIAS
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= CHAT["max_tokens"]


def test_chat_completion_streams(llama_server: LlamaServer):
    chunks = stream_chat(llama_server.base_url, CHAT)
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert isinstance(text, str)


def test_sigterm_exits_promptly(tiny_model: tuple[str, Path]):
    python, model = tiny_model
    with running_server(python, model, model.parent) as server:
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = server.process.wait(timeout=15)
        took = time.monotonic() - started
    # uvicorn shuts down gracefully, then re-raises the signal: the exit is "killed by SIGTERM".
    assert code in (0, -signal.SIGTERM), server.log_text()
    assert "Application shutdown complete" in server.log_text()
    assert took < 10


def test_split_model_loads_from_its_first_shard(tiny_model: tuple[str, Path], tmp_path: Path):
    # Multi-file GGUF repos ship NAME-00001-of-0000N.gguf; llama.cpp is given the first shard.
    python, _ = tiny_model
    written = subprocess.run(
        [python, str(TINY_GGUF), str(tmp_path / "split.gguf"), "6"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    first = Path(written.stdout.strip())
    assert first.name == "split-00001-of-00004.gguf"
    with running_server(python, first, tmp_path) as server:
        answer = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
