"""Owns the checks of bench/gateway.py's parts that need no gateway: its engine and its clients.

A bench is not a timed test, so this runs none of it; it checks that what the bench reports
is measured right: bench/fast_engine.py as a real process, the TTFB probe's reading of
plain and chunked answers against it, wrk's script and the parsing of its output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.gateway_load import lua_script, parse_wrk, run_wrk, ttfb

ROOT = Path(__file__).resolve().parents[2]
FAST_ENGINE = ROOT / "bench" / "fast_engine.py"
HOST = "127.0.0.1"
CHAT = b'{"model":"m","messages":[{"role":"user","content":"it\'s"}]'
WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:1/v1/chat/completions
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   693.09ms  300.00ms   2.10s    70.00%
  Latency Distribution
     50%  693.09ms
     75%    1.00s
     90%    1.50s
     99%    2.10s
  160 requests in 2.00s, 100.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:     80.00
Transfer/sec:     50.00KB
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def engine() -> Iterator[int]:
    """bench/fast_engine.py: 40 ms before each answer, streams of 5 tokens 30 ms apart."""
    port = free_port()
    argv = [sys.executable, str(FAST_ENGINE), "--port", str(port), "--latency-ms", "40"]
    proc = subprocess.Popen([*argv, "--stream-tokens", "5", "--token-interval-ms", "30"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "fast_engine not up"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.rate == 80.0
    assert result.p50_ms == pytest.approx(693.09)
    assert result.p99_ms == pytest.approx(2100.0)
    assert result.requests == 160
    assert result.errors == 4 + 2 + 3


def test_fast_engine_answers_plain_and_streamed_chat(engine: int) -> None:
    url = f"http://{HOST}:{engine}/v1/chat/completions"
    plain = httpx.post(url, json={"model": "qwen", "messages": []}, timeout=5)
    assert plain.status_code == 200 and plain.json()["model"] == "qwen"
    assert plain.json()["choices"][0]["message"]["role"] == "assistant"
    with httpx.stream("POST", url, json={"model": "q", "stream": True}, timeout=5) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert len(lines) == 6 and lines[-1] == "data: [DONE]"
    models = httpx.get(f"http://{HOST}:{engine}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["fake/bench"]


def test_probe_times_the_first_body_byte_of_plain_and_chunked_answers(engine: int) -> None:
    plain = ttfb(HOST, engine, "/v1/chat/completions", CHAT + b"}", {}, 2, 0.4)
    assert plain.errors == 0 and len(plain.ttfb_s) >= 4
    assert min(plain.ttfb_s) >= 0.039
    assert max(t - f for t, f in zip(plain.total_s, plain.ttfb_s, strict=True)) < 0.01

    stream = ttfb(HOST, engine, "/v1/chat/completions", CHAT + b',"stream":true}', {}, 2, 0.4)
    assert stream.errors == 0 and len(stream.ttfb_s) >= 2
    # The first token comes after the latency; the end after four more 30 ms gaps.
    assert 0.039 <= min(stream.ttfb_s) and max(stream.ttfb_s) < 0.1
    assert min(stream.total_s) >= 0.04 + 4 * 0.03 - 0.005

    missing = ttfb(HOST, engine, "/v1/nothing", b"{}", {"X-Any": "1"}, 1, 0.2)
    assert missing.errors >= 1 and missing.ttfb_s == []


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_posts_the_script_body(engine: int, tmp_path: Path) -> None:
    script = lua_script(tmp_path / "post.lua", CHAT + b"}", {"Authorization": "Bearer k'1"})
    assert "wrk.headers['Authorization'] = 'Bearer k\\'1'" in script.read_text()
    result = run_wrk(f"http://{HOST}:{engine}/v1/chat/completions", script, 4, 1)
    assert result.errors == 0
    # Four connections, each answer 40 ms late: about 100 a second, never 1000.
    assert 40 <= result.rate <= 110
    assert result.p50_ms >= 39
