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
from sagellmd.engines.embedding_api import MAX_BODY_BYTES, TRUNCATED_HEADER
from sagellmd.engines.embedding_batcher import plan_batch, retry_after_seconds
from sagellmd.engines.embedding_model import plan_groups

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


def _spawn(
    model: str, port: int, stderr_path: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
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
                *args,
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


# A second engine with tight limits, for what the defaults make slow or impossible to see.
SMALL_ARGS = ("--no-normalize", "--max-batch-size", "4", "--max-queue", "8", "--max-wait-ms", "0")


@pytest.fixture(scope="module")
def small_spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    stderr_path = tmp_path_factory.mktemp("embedding-engine-small") / "stderr.log"
    process = _spawn(MODEL_ID, port, stderr_path, *SMALL_ARGS)
    server = Server(process, f"http://127.0.0.1:{port}", stderr_path)
    watcher = threading.Thread(target=server.watch_startup, daemon=True)
    watcher.start()
    try:
        yield server
    finally:
        _stop(server.process)
        watcher.join(timeout=10)


@pytest.fixture(scope="module")
def reference(spawned: Server, small_spawned: Server) -> Any:
    # Depends on both engines so the test process loads its copy while they load theirs.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(MODEL_ID), device="cpu")


def _wait_ready(spawned: Server) -> Server:
    if not spawned.ready.wait(READY_TIMEOUT):
        pytest.fail(
            f"engine not ready within {READY_TIMEOUT:.0f}s (exit code {spawned.process.poll()}):"
            f"\n{spawned.stderr()}"
        )
    return spawned


@pytest.fixture(scope="module")
def server(spawned: Server, reference: Any) -> Server:
    return _wait_ready(spawned)


@pytest.fixture(scope="module")
def small(small_spawned: Server, reference: Any) -> Server:
    return _wait_ready(small_spawned)


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


def _stats(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/stats")
    assert response.status_code == 200, response.text
    return response.json()


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        return await asyncio.gather(*(http.post("/v1/embeddings", json=body) for body in bodies))


@pytest.mark.slow
def test_concurrent_single_text_requests_share_model_calls(
    client: httpx.Client, server: Server, reference: Any
) -> None:
    texts = [
        f"request {i} asks about {'tea' if i % 3 else 'trains'} and nothing else" for i in range(32)
    ]
    before = _stats(client)
    responses = asyncio.run(_post_all(server.url, [{"input": text} for text in texts]))
    after = _stats(client)
    expected = reference.encode(texts)
    for response, want in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        [vector] = _vectors(response.json())
        assert _cosine(vector, want) > 0.9999
    assert after["texts"] - before["texts"] == 32
    assert after["requests"] - before["requests"] == 32
    calls = after["model_calls"] - before["model_calls"]
    # One call per request would be 32; batching gathers them into a handful.
    assert calls <= 16, (before, after)
    assert after["largest_batch"] > 1


@pytest.mark.slow
def test_mixed_concurrent_requests_each_get_their_texts_in_order(
    server: Server, reference: Any
) -> None:
    # Sizes around the default --max-batch-size 64, so some requests span model calls and
    # most calls mix texts of several requests.
    sizes = [1, 3, 70, 1, 7, 64, 2, 1, 30, 5]
    requests: list[list[str]] = []
    for r, size in enumerate(sizes):
        requests.append(
            [
                f"text {j} of request {r}: {'short' if j % 2 else 'a longer one ' * (j % 7)}"
                for j in range(size)
            ]
        )
    responses = asyncio.run(_post_all(server.url, [{"input": texts} for texts in requests]))
    flat = [text for texts in requests for text in texts]
    expected = iter(reference.encode(flat))
    for response, texts in zip(responses, requests, strict=True):
        assert response.status_code == 200, response.text
        payload = response.json()
        assert [item["index"] for item in payload["data"]] == list(range(len(texts)))
        for vector in _vectors(payload):
            assert _cosine(vector, next(expected)) > 0.9999


@pytest.mark.slow
def test_input_longer_than_the_model_window_is_truncated_and_reported(
    client: httpx.Client, reference: Any
) -> None:
    # all-MiniLM-L6-v2 sees 256 tokens: "a " * 254 plus [CLS] and [SEP] fits exactly.
    fits, too_long = "a " * 254, "word " * 400
    texts = ["short one", fits, too_long]
    response = client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["truncated"] == [2]
    assert response.headers[TRUNCATED_HEADER] == "1"
    assert payload["usage"]["prompt_tokens"] == 4 + 256 + 256
    # sentence-transformers truncates the same way, so the vectors still agree.
    for vector, want in zip(_vectors(payload), reference.encode(texts), strict=True):
        assert _cosine(vector, want) > 0.9999
    untruncated = client.post("/v1/embeddings", json={"input": texts[:2]})
    assert untruncated.json()["truncated"] == []
    assert TRUNCATED_HEADER not in untruncated.headers


@pytest.mark.slow
def test_body_over_the_limit_is_413_before_it_is_read(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        f"\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    )
    # Only the headers are sent: the engine must answer from Content-Length alone.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.slow
def test_no_normalize_returns_pooled_vectors_and_splits_big_requests(
    small: Server, reference: Any
) -> None:
    texts = [f"unnormalized sentence number {i}" for i in range(10)]
    with httpx.Client(base_url=small.url, timeout=60.0) as http:
        before = _stats(http)
        payload = _embed(http, input=texts)
        after = _stats(http)
        prefix = _vectors(_embed(http, input=texts[0], dimensions=32))[0]
    vectors = _vectors(payload)
    # --max-batch-size 4: ten inputs take three model calls and still come back in order.
    assert after["model_calls"] - before["model_calls"] == 3
    assert after["largest_batch"] == 4
    for vector, want in zip(vectors, reference.encode(texts), strict=True):
        assert abs(float(np.linalg.norm(vector)) - 1.0) > 0.1
        assert _cosine(vector, want) > 0.9999
    # Without normalization a shorter vector is a plain prefix, not rescaled.
    assert np.allclose(prefix, vectors[0][:32], atol=1e-4)


@pytest.mark.slow
def test_queue_over_its_bound_is_503_with_retry_after(small: Server) -> None:
    # --max-queue 8 and --max-batch-size 4: while the first request's texts are queued or
    # encoding, most of the others find more than 8 texts waiting.
    bodies = [{"input": [f"queued text {r}-{i} " * 40 for i in range(8)]} for r in range(12)]
    responses = asyncio.run(_post_all(small.url, bodies))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) == {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
            error = response.json()["error"]
            assert error["code"] == "overloaded"
            assert "texts are waiting" in error["message"]
        else:
            assert len(response.json()["data"]) == 8
    with httpx.Client(base_url=small.url, timeout=60.0) as http:
        assert _stats(http)["rejected"] >= statuses.count(503)
        assert len(_embed(http, input="after the storm")["data"]) == 1


def test_plan_batch_shares_capacity_between_waiting_requests() -> None:
    assert plan_batch([2048, 1, 1], 64) == [62, 1, 1]
    assert plan_batch([3, 100], 64) == [3, 61]
    assert plan_batch([1] * 70, 64) == [1] * 64 + [0] * 6
    assert plan_batch([10, 10], 64) == [10, 10]
    assert plan_batch([], 64) == []


def test_plan_groups_pads_only_where_a_call_is_dearer() -> None:
    assert plan_groups([30] * 10, 64) == [10]
    assert plan_groups([256, 10, 10, 10], 64) == [1, 3]
    assert plan_groups([12, 11, 10], 64) == [3]
    assert sum(plan_groups([60, 58, 55, 40, 39, 20, 19, 18, 5], 64)) == 9
    assert plan_groups([], 64) == []


def test_retry_after_is_whole_seconds_until_the_queue_drains() -> None:
    assert retry_after_seconds(0, 100.0) == 1
    assert retry_after_seconds(250, 100.0) == 3
    assert retry_after_seconds(10, 0.0) == 1
    assert retry_after_seconds(10**6, 1.0) == 60


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
    last = stderr.strip().splitlines()[-1]
    assert model in last and "not found" in last


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
    # The last line alone says what is wrong and how to fix it: what a supervisor shows.
    last = stderr.strip().splitlines()[-1]
    assert f"model '{model}' not found locally and HF_HUB_OFFLINE is set" in last
    assert f"download {model}" in last


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


@pytest.mark.slow
def test_the_alias_of_the_served_model_is_accepted(client: httpx.Client) -> None:
    payload = _embed(client, input="alias", model="all-MiniLM-L6-v2")
    assert payload["model"] == MODEL_ID and len(payload["data"]) == 1
