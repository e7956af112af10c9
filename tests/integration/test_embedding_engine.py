"""The built-in embedding engine as a real process serving the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sagellmd.engines.embedding import MAX_INPUT_CHARS, MAX_INPUTS, resolve_model_path

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "sagellm keeps inference engines running on a GPU workstation.",
    "Embeddings map text to vectors.",
    "Ein kurzer deutscher Satz.",
    "a",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(model: str, port: int, stderr_path: Path, **env: str) -> subprocess.Popen[bytes]:
    # stderr goes to a file: a pipe nobody reads could fill up and block the server.
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagellmd.engines.embedding",
                "--model",
                model,
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    # /health answers seen while waiting for ready: None = connection refused.
    startup_answers: list[tuple[int | None, Any]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def watch_startup(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    response = client.get(f"{self.url}/health")
                except httpx.TransportError:
                    self.startup_answers.append((None, None))
                else:
                    self.startup_answers.append((response.status_code, response.json()))
                    if response.status_code == 200:
                        self.ready.set()
                        return
                time.sleep(0.05)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    stderr_path = tmp_path_factory.mktemp("embedding-engine") / "stderr.log"
    server = Server(_spawn(MODEL_ID, port, stderr_path), f"http://127.0.0.1:{port}", stderr_path)
    watcher = threading.Thread(target=server.watch_startup, daemon=True)
    watcher.start()
    try:
        yield server
        # Stopping the ready server doubles as the SIGTERM test, which saves loading the model
        # once more; a failure here shows up as an error in the module's last test.
        server.process.send_signal(signal.SIGTERM)
        try:
            returncode = server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("engine did not exit within 10s of SIGTERM")
        assert returncode == 0, f"SIGTERM exit code {returncode}:\n{server.stderr()}"
    finally:
        _stop(server.process)
        watcher.join(timeout=10)


@pytest.fixture(scope="module")
def reference(spawned: Server) -> Any:
    # Depends on `spawned` so the test process loads its copy while the server loads its own.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(MODEL_ID), device="cpu")


@pytest.fixture(scope="module")
def server(spawned: Server, reference: Any) -> Server:
    if not spawned.ready.wait(READY_TIMEOUT):
        pytest.fail(
            f"engine not ready within {READY_TIMEOUT:.0f}s (exit code {spawned.process.poll()}):"
            f"\n{spawned.stderr()}"
        )
    return spawned


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as http:
        yield http


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _embed(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _vectors(payload: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(item["embedding"], dtype=np.float32) for item in payload["data"]]


@pytest.mark.slow
def test_health_is_503_loading_until_the_model_is_ready(server: Server) -> None:
    answers = [answer for answer in server.startup_answers if answer[0] is not None]
    assert answers[-1] == (200, {"status": "ok"})
    # Loading starts only after the bind, so every answer before ready must be "loading"; it
    # is not asserted that one was seen, because a slow test runner may poll too late.
    assert all(answer == (503, {"status": "loading"}) for answer in answers[:-1]), answers


@pytest.mark.slow
def test_single_string_matches_sentence_transformers(client: httpx.Client, reference: Any) -> None:
    payload = _embed(client, input=TEXTS[0])
    assert payload["object"] == "list"
    assert payload["model"] == MODEL_ID
    assert [(item["object"], item["index"]) for item in payload["data"]] == [("embedding", 0)]
    [vector] = _vectors(payload)
    expected = reference.encode([TEXTS[0]])[0]
    assert vector.shape == expected.shape == (384,)
    assert _cosine(vector, expected) > 0.9999


@pytest.mark.slow
def test_list_matches_sentence_transformers_in_input_order(
    client: httpx.Client, reference: Any
) -> None:
    payload = _embed(client, input=TEXTS)
    assert [item["index"] for item in payload["data"]] == list(range(len(TEXTS)))
    expected = reference.encode(TEXTS)
    for vector, want in zip(_vectors(payload), expected, strict=True):
        assert _cosine(vector, want) > 0.9999


@pytest.mark.slow
def test_request_larger_than_a_batch_keeps_input_order(
    client: httpx.Client, reference: Any
) -> None:
    # 70 inputs span two batches of the default --max-batch-size 64.
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'rockets'}" for i in range(70)]
    payload = _embed(client, input=texts)
    assert [item["index"] for item in payload["data"]] == list(range(70))
    expected = reference.encode(texts)
    cosines = [_cosine(v, w) for v, w in zip(_vectors(payload), expected, strict=True)]
    assert min(cosines) > 0.9999


@pytest.mark.slow
def test_usage_counts_the_tokenizers_tokens(client: httpx.Client, reference: Any) -> None:
    payload = _embed(client, input=TEXTS)
    # Special tokens included: that is what the model processes for each input.
    expected = sum(len(reference.tokenizer(text)["input_ids"]) for text in TEXTS)
    assert payload["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


@pytest.mark.slow
def test_base64_is_the_same_little_endian_float32_vector(client: httpx.Client) -> None:
    as_float = _vectors(_embed(client, input=TEXTS[:2]))
    as_base64 = _embed(client, input=TEXTS[:2], encoding_format="base64")
    decoded = [
        np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        for item in as_base64["data"]
    ]
    assert [item["index"] for item in as_base64["data"]] == [0, 1]
    for got, want in zip(decoded, as_float, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.slow
def test_dimensions_truncates_and_renormalizes(client: httpx.Client, reference: Any) -> None:
    payload = _embed(client, input=TEXTS[1], dimensions=64, model=MODEL_ID, user="someone")
    [vector] = _vectors(payload)
    assert vector.shape == (64,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert _cosine(vector, reference.encode([TEXTS[1]])[0][:64]) > 0.9999


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_vectors(server: Server, reference: Any) -> None:
    async def embed_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as http:
            return await asyncio.gather(
                *(http.post("/v1/embeddings", json={"input": [text] * 3}) for text in TEXTS)
            )

    responses = asyncio.run(embed_all())
    expected = reference.encode(TEXTS)
    for response, want in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        for vector in _vectors(response.json()):
            assert _cosine(vector, want) > 0.9999


@pytest.mark.slow
def test_models_lists_the_served_id(client: httpx.Client) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "owned_by": "sagellm"}],
    }


BAD_REQUESTS: list[tuple[str, bytes | None, Any, str]] = [
    # (case id, raw body or None, JSON body, text the message must contain)
    ("invalid-json", b'{"input": ', None, "JSON"),
    ("invalid-utf8", b"\xff\xfe\x00", None, "JSON"),
    ("deeply-nested-json", b"[" * 100_000, None, "JSON"),
    ("body-not-object", None, ["hello"], "request body"),
    ("missing-input", None, {"model": MODEL_ID}, "'input'"),
    ("input-null", None, {"input": None}, "'input'"),
    ("input-number", None, {"input": 42}, "'input'"),
    ("input-object", None, {"input": {"text": "hi"}}, "'input'"),
    ("empty-string", None, {"input": ""}, "'input'"),
    ("empty-list", None, {"input": []}, "'input'"),
    ("empty-string-item", None, {"input": ["ok", ""]}, "'input[1]'"),
    ("non-string-item", None, {"input": ["ok", 3]}, "'input[1]'"),
    ("token-ids", None, {"input": [[101, 7592, 102]]}, "'input[0]'"),
    ("too-many-inputs", None, {"input": ["x"] * (MAX_INPUTS + 1)}, f"{MAX_INPUTS}"),
    ("input-too-long", None, {"input": "a" * (MAX_INPUT_CHARS + 1)}, f"{MAX_INPUT_CHARS}"),
    ("item-too-long", None, {"input": ["a", "b" * (MAX_INPUT_CHARS + 1)]}, "'input[1]'"),
    ("unknown-field", None, {"input": "x", "temperature": 0.5}, "'temperature'"),
    ("other-model", None, {"input": "x", "model": "text-embedding-3-small"}, "'model'"),
    ("model-not-string", None, {"input": "x", "model": 7}, "'model'"),
    ("bad-encoding-format", None, {"input": "x", "encoding_format": "int8"}, "'encoding_format'"),
    ("dimensions-too-large", None, {"input": "x", "dimensions": 385}, "'dimensions'"),
    ("dimensions-zero", None, {"input": "x", "dimensions": 0}, "'dimensions'"),
    ("dimensions-string", None, {"input": "x", "dimensions": "64"}, "'dimensions'"),
    ("dimensions-boolean", None, {"input": "x", "dimensions": True}, "'dimensions'"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("raw", "body", "names"), [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_is_400_naming_the_field(
    client: httpx.Client, raw: bytes | None, body: Any, names: str
) -> None:
    if raw is not None:
        response = client.post(
            "/v1/embeddings", content=raw, headers={"content-type": "application/json"}
        )
    else:
        response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {}
    assert names in error["message"]
    assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_server_still_serves_after_bad_requests(client: httpx.Client, server: Server) -> None:
    for _, raw, body, _ in BAD_REQUESTS:
        if raw is not None:
            client.post("/v1/embeddings", content=raw)
        else:
            client.post("/v1/embeddings", json=body)
    assert client.get("/health").json() == {"status": "ok"}
    assert len(_embed(client, input="still here")["data"]) == 1
    assert server.process.poll() is None


def test_missing_model_directory_exits_nonzero_naming_it(tmp_path: Path) -> None:
    model = "/nonexistent/model-dir"
    process = _spawn(model, _free_port(), tmp_path / "stderr.log")
    try:
        returncode = process.wait(timeout=60)
    finally:
        _stop(process)
    stderr = (tmp_path / "stderr.log").read_text()
    assert returncode != 0
    assert model in stderr and "not found" in stderr


@pytest.mark.slow
def test_hub_model_missing_offline_exits_nonzero_saying_how_to_get_it(tmp_path: Path) -> None:
    model = "sagellm-tests/no-such-model"
    # An empty HF cache so the result cannot depend on what this machine downloaded before.
    process = _spawn(model, _free_port(), tmp_path / "stderr.log", HF_HOME=str(tmp_path / "hf"))
    try:
        returncode = process.wait(timeout=60)
    finally:
        _stop(process)
    stderr = (tmp_path / "stderr.log").read_text()
    assert returncode != 0
    assert f"model '{model}' not found locally and HF_HUB_OFFLINE is set" in stderr
    assert f"download {model}" in stderr


def _wait_for_health(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("engine never answered /health")


@pytest.mark.slow
def test_sigterm_while_loading_exits_zero_promptly(tmp_path: Path) -> None:
    port = _free_port()
    process = _spawn(MODEL_ID, port, tmp_path / "stderr.log")
    try:
        _wait_for_health(port, process)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
    finally:
        _stop(process)
    assert returncode == 0, (tmp_path / "stderr.log").read_text()
