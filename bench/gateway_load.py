"""The load generators of bench/gateway.py: wrk for rate and latency, an asyncio probe for TTFB.

`wrk` (C, epoll, Debian's package) drives the rate: a Python client would be the
bottleneck long before a fast engine is. A Lua script makes its requests POSTs with a JSON
body. wrk reports latency to the end of each answer; it cannot see when the first byte came.

Time to first byte comes from `ttfb()`: one uvloop event loop, one asyncio Protocol per
connection (no HTTP library: it finds the end of the head, then the first body byte, then
the end of the body from Content-Length or the chunked terminator), keep-alive, each
connection sending its next request as soon as an answer ends. It runs after wrk, not with
it, at the same concurrency; its own rate is printed so a reader can see when it, rather than
the server, was the limit (for the fast engine without streaming it is: a Python client
does about 5-10 k answers a second on one core). TTFB is to the first byte of the body:
for a stream the first `data:` event, not the headers a proxy may send before it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

CHUNKED_END = b"\r\n0\r\n\r\n"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass(frozen=True)
class WrkResult:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers plus socket errors (timeouts included)


def lua_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script that POSTs `body` as JSON with `headers`."""

    def quoted(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    lines = ['wrk.method = "POST"', f"wrk.body = {quoted(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{quoted(name)}] = {quoted(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench/gateway.py needs wrk: sudo apt-get install -y wrk")
    return found


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    threads = 1 if connections == 1 else 2
    result = subprocess.run(
        [
            wrk_path(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(result.stdout)


def parse_wrk(out: str) -> WrkResult:
    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(match.group(1)) * UNITS[match.group(2)] if match else float("nan")

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        rate=float(rate.group(1)) if rate else 0.0,
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(total.group(1)) if total else 0,
        errors=errors,
    )


@dataclass
class Samples:
    ttfb_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    def percentile_ms(self, q: float, total: bool = False) -> float:
        """Of the times to first byte, or with `total` of the whole answers."""
        ordered = sorted(self.total_s if total else self.ttfb_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def rate(self) -> float:
        return len(self.total_s) / self.wall_s if self.wall_s else 0.0


class Probe(asyncio.Protocol):
    """One keep-alive connection sending `request` again and again until `deadline`."""

    def __init__(self, request: bytes, samples: Samples, deadline: float) -> None:
        self.request = request
        self.samples = samples
        self.deadline = deadline
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        self.head = b""
        self.in_body = False
        self.length: int | None = None
        self.seen = 0
        self.tail = b""
        self.first: float | None = None
        self.ok = True
        self.close_after = False
        self.began = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.start_body(self.head[:end].decode("latin-1"))
            data = self.head[end + 4 :]
        if data and self.first is None:
            self.first = now
        if self.length is not None:
            self.seen += len(data)
            if self.seen >= self.length:
                self.finish(now)
        else:
            self.tail = (self.tail + data)[-len(CHUNKED_END) :]
            if self.tail == CHUNKED_END:
                self.finish(now)

    def start_body(self, head: str) -> None:
        self.in_body = True
        lines = head.split("\r\n")
        self.ok = lines[0].split(" ", 2)[1].startswith("2")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        self.close_after = headers.get("connection", "").lower() == "close"
        if "content-length" in headers:
            self.length = int(headers["content-length"])
        # Chunked: the terminator is looked for behind a CRLF; an empty body has none.
        self.tail = b"\r\n"

    def finish(self, now: float) -> None:
        # The connect is not timed: send() runs once the connection is made.
        if self.ok:
            self.samples.ttfb_s.append((self.first or now) - self.began)
            self.samples.total_s.append(now - self.began)
        else:
            self.samples.errors += 1
        assert self.transport is not None
        if now >= self.deadline or self.close_after:
            self.transport.close()
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_body and self.length is None and self.tail != CHUNKED_END:
            self.samples.errors += 1
        if not self.done.done():
            self.done.set_result(None)


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def probe_all(
    host: str, port: int, request: bytes, connections: int, seconds: float
) -> Samples:
    loop = asyncio.get_running_loop()
    samples = Samples()
    began = time.perf_counter()
    deadline = began + seconds
    probes: list[Probe] = []
    while time.perf_counter() < deadline:
        for _ in range(connections - sum(1 for p in probes if not p.done.done())):
            _, probe = await loop.create_connection(
                lambda: Probe(request, samples, deadline), host, port
            )
            probes.append(probe)
        await asyncio.wait([p.done for p in probes if not p.done.done()], timeout=0.05)
    await asyncio.wait([p.done for p in probes], timeout=30)
    samples.wall_s = time.perf_counter() - began
    return samples


def ttfb(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    connections: int,
    seconds: float,
) -> Samples:
    request = http_request(host, port, path, body, headers)
    return uvloop.run(probe_all(host, port, request, connections, seconds))
