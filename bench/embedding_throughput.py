"""Throughput of the embedding engine for single-text requests, against offline model.encode().

Run: .venv/bin/python bench/embedding_throughput.py [--texts 512] [--infinity PATH]

Starts `python -m sagellmd.engines.embedding` on a free loopback port, sends each of N texts as
its own POST /v1/embeddings at concurrency 1, 8 and 32 (keep-alive connections, one per
client), and compares texts/s with one offline `model.encode(texts, batch_size=B)` of the same
N texts in this process. Offline is measured before and after the HTTP runs; the ratio is
taken against the faster of the two, so machine noise cannot flatter the server.
With --infinity PATH (the `infinity_emb` script of another virtualenv) infinity-emb serves the
same model from the same local directory and gets the same requests. Every run is bounded in
requests and time, and every server started here is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

# The engine sleeps OpenMP threads at barriers (see sagellmd/engines/embedding.py); the offline
# yardstick gets the same setting, which is also faster on a busy box, and so does infinity.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sagellmd.engines.embedding_model import resolve_model_path  # noqa: E402

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
INFINITY_NAME = "all-MiniLM-L6-v2"
STARTUP_TIMEOUT_S = 240.0

WORDS = (
    "the quick brown fox jumps over a lazy dog while engineers deploy inference engines on "
    "shared workstations and every model needs memory time patience careful scheduling good "
    "logs clear errors restarts after crashes embeddings map sentences to vectors so that "
    "similar meanings land close together search ranks documents by cosine similarity "
    "retrieval augmented generation feeds the best passages into a language model prompt "
    "batching gathers concurrent requests into one forward pass which keeps the processor busy "
    "latency matters for interactive users throughput matters for indexing large corpora "
    "tokenizers split words into pieces attention looks at every token pair pooling averages "
    "hidden states normalization makes vectors unit length"
).split()


def make_texts(count: int, seed: int, min_words: int, max_words: int) -> list[str]:
    """Distinct sentence-like texts of varied length, the same for a given seed."""
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        texts.append(f"{i}: {' '.join(words)}.")
    return texts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(
    argv: list[str], health_url: str, log: Path, env: dict[str, str]
) -> Iterator[psutil.Process]:
    """Run a server until its health URL answers 200; kill its process group on exit."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} not healthy after {STARTUP_TIMEOUT_S:.0f}s")
            try:
                if httpx.get(health_url, timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield psutil.Process(process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@dataclass(frozen=True)
class Run:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    vectors: dict[int, np.ndarray]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def _request_bytes(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def run_clients(
    port: int,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    time_limit: float,
    keep: set[int],
) -> Run:
    """Send each body once as its own request from ``concurrency`` keep-alive clients.

    A minimal HTTP/1.1 client: on a 2-core box a heavier one would take CPU from the server
    and measure the client instead.
    """
    next_index = 0
    latencies: list[float] = []
    vectors: dict[int, np.ndarray] = {}
    errors = 0
    deadline = time.monotonic() + time_limit

    async def client() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(bodies) and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                sent = time.perf_counter()
                writer.write(_request_bytes(port, path, bodies[index]))
                status, payload = await _read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if status != 200:
                    errors += 1
                elif index in keep:
                    embedding = json.loads(payload)["data"][0]["embedding"]
                    vectors[index] = np.asarray(embedding, dtype=np.float32)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Run(concurrency, len(latencies), errors, seconds, latencies, vectors)


class Offline:
    """One offline ``model.encode`` of all texts, timed; the yardstick measured between runs."""

    def __init__(self, model: Any, texts: list[str], batch_size: int) -> None:
        self.model = model
        self.texts = texts
        self.batch_size = batch_size
        self.cpu_ms_per_text = 0.0
        model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
        self.reference, _ = self._encode()
        self.last = self.measure()

    def _encode(self) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        cpu = time.process_time()
        vectors = self.model.encode(self.texts, batch_size=self.batch_size, show_progress_bar=False)
        self.cpu_ms_per_text = (time.process_time() - cpu) * 1000 / len(self.texts)
        return vectors, len(self.texts) / (time.perf_counter() - started)

    def measure(self) -> float:
        self.last = self._encode()[1]
        return self.last


@dataclass(frozen=True)
class Result:
    server: str
    run: Run
    offline: float
    cpu_ms_per_text: float
    offline_cpu_ms_per_text: float
    batches: str = ""

    @property
    def ratio(self) -> float:
        return self.run.per_second / self.offline

    def line(self, reference: np.ndarray) -> str:
        run = self.run
        ms = sorted(latency * 1000 for latency in run.latencies)
        p50 = statistics.median(ms)
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        return (
            f"{self.server:<9} c={run.concurrency:<3} {run.requests:>4} req {run.errors} err "
            f"{run.per_second:>6.1f} req/s = texts/s  offline {self.offline:6.1f}  "
            f"ratio {self.ratio:4.2f}  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
            f"cpu/text {self.cpu_ms_per_text:5.1f} ms "
            f"(offline {self.offline_cpu_ms_per_text:4.1f})  "
            f"min cos {check_vectors(run, reference):.6f}{self.batches}"
        )


def check_vectors(run: Run, reference: np.ndarray) -> float:
    """Lowest cosine between served vectors and the offline ones for the same texts."""
    cosines = [
        float(v @ reference[i] / (np.linalg.norm(v) * np.linalg.norm(reference[i])))
        for i, v in run.vectors.items()
    ]
    return min(cosines) if cosines else float("nan")


def model_calls(port: int) -> tuple[int, int]:
    stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5.0).json()
    return stats["model_calls"], stats["texts"]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure_levels(
    name: str,
    process: psutil.Process,
    port: int,
    path: str,
    bodies: list[bytes],
    levels: list[int],
    args: argparse.Namespace,
    offline: Offline,
) -> list[Result]:
    """Each level between two offline measurements; its ratio is to the faster of the two."""
    keep = set(range(0, len(bodies), max(1, len(bodies) // 32)))
    asyncio.run(run_clients(port, path, bodies[:64], 8, 30.0, set()))  # warm-up
    results = []
    for concurrency in levels:
        before = offline.last
        calls = model_calls(port) if name == "sagellm" else None
        cpu = _cpu_seconds(process)
        run = asyncio.run(run_clients(port, path, bodies, concurrency, args.time_limit, keep))
        cpu_ms = (_cpu_seconds(process) - cpu) * 1000 / max(run.requests, 1)
        batches = ""
        if calls is not None:
            now = model_calls(port)
            count, texts = now[0] - calls[0], now[1] - calls[1]
            batches = f"  {count} model calls (mean batch {texts / max(count, 1):.1f})"
        before_cpu = offline.cpu_ms_per_text
        yardstick = max(before, offline.measure())
        offline_cpu = min(before_cpu, offline.cpu_ms_per_text)
        result = Result(name, run, yardstick, cpu_ms, offline_cpu, batches)
        print(result.line(offline.reference), flush=True)
        results.append(result)
    return results


def bench_sagellm(args: argparse.Namespace, texts: list[str], offline: Offline) -> list[Result]:
    port = free_port()
    argv = [
        sys.executable, "-m", "sagellmd.engines.embedding", "--model", MODEL_ID,
        "--port", str(port), "--max-batch-size", str(args.batch_size),
        "--max-wait-ms", str(args.max_wait_ms),
    ]  # fmt: skip
    log = Path(tempfile.mkdtemp(prefix="sagellm-bench-")) / "embedding.log"
    bodies = [json.dumps({"input": text, "model": MODEL_ID}).encode() for text in texts]
    health = f"http://127.0.0.1:{port}/health"
    with server_process(argv, health, log, {"HF_HUB_OFFLINE": "1"}) as process:
        return [
            result
            for _ in range(args.rounds)
            for result in measure_levels(
                "sagellm", process, port, "/v1/embeddings", bodies, args.concurrency, args, offline
            )
        ]


def bench_infinity(args: argparse.Namespace, texts: list[str], offline: Offline) -> list[Result]:
    port = free_port()
    argv = [
        args.infinity, "v2", "--model-id", resolve_model_path(MODEL_ID),
        "--served-model-name", INFINITY_NAME, "--engine", "torch", "--device", "cpu",
        "--batch-size", str(args.batch_size), "--host", "127.0.0.1", "--port", str(port),
        "--no-bettertransformer", "--log-level", "warning",
    ]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    log = Path(tempfile.mkdtemp(prefix="sagellm-bench-")) / "infinity.log"
    bodies = [json.dumps({"input": [text], "model": INFINITY_NAME}).encode() for text in texts]
    try:
        with server_process(argv, f"http://127.0.0.1:{port}/health", log, env) as process:
            return [
                result
                for _ in range(args.rounds)
                for result in measure_levels(
                    "infinity", process, port, "/embeddings", bodies,
                    args.infinity_concurrency, args, offline,
                )
            ]  # fmt: skip
    except (RuntimeError, OSError) as exc:
        print(f"infinity could not run: {exc}", flush=True)
        return []


def summarize(results: list[Result]) -> None:
    print("\nsummary (median over rounds; ratio = served texts/s / offline batched texts/s)")
    keys = sorted(
        {(r.server, r.run.concurrency) for r in results}, key=lambda k: (k[0] != "sagellm", k)
    )
    for server, concurrency in keys:
        runs = [r for r in results if (r.server, r.run.concurrency) == (server, concurrency)]
        served = statistics.median(r.run.per_second for r in runs)
        yardstick = statistics.median(r.offline for r in runs)
        print(
            f"{server:<9} c={concurrency:<3} {served:6.1f} texts/s  "
            f"offline {yardstick:6.1f} texts/s  "
            f"ratio {statistics.median(r.ratio for r in runs):4.2f}  "
            f"(ratios {', '.join(f'{r.ratio:.2f}' for r in runs)})  "
            f"server cpu/text {statistics.median(r.cpu_ms_per_text for r in runs):.1f} ms, "
            f"offline {statistics.median(r.offline_cpu_ms_per_text for r in runs):.1f} ms"
        )


def _levels(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=512, help="texts, one request each")
    parser.add_argument("--min-words", type=int, default=8)
    parser.add_argument("--max-words", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64, help="offline and server batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=_levels, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="repeat every level this often")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level")
    parser.add_argument("--infinity", help="infinity_emb executable of another virtualenv")
    parser.add_argument("--infinity-concurrency", type=_levels, default=[32])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    texts = make_texts(args.texts, args.seed, args.min_words, args.max_words)
    model = SentenceTransformer(resolve_model_path(MODEL_ID), device="cpu")
    tokens = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    print(
        f"{len(texts)} texts of {min(tokens)}-{max(tokens)} tokens (mean "
        f"{statistics.mean(tokens):.0f}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}; "
        f"batch size {args.batch_size}",
        flush=True,
    )
    offline = Offline(model, texts, args.batch_size)
    print(f"offline   encode(texts, batch_size={args.batch_size}): {offline.last:.1f} texts/s")
    results = bench_sagellm(args, texts, offline)
    if args.infinity:
        results += bench_infinity(args, texts, offline)
    summarize(results)


if __name__ == "__main__":
    main()
