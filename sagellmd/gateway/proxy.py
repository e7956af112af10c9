"""Forwards one request to one engine and relays its answer: whole, or chunk by chunk."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.upstream import UpstreamError, UpstreamPool

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the relay sets itself.
DROPPED_ANSWER_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"}
)
DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
        b"x-request-id",
        b"expect",
    }
)
EVENT_STREAM = b"text/event-stream"


@dataclass(slots=True)
class Attempt:
    """How forwarding to one engine went: answered (some bytes sent), or retryable."""

    sent: bool
    status: int = 0
    retryable_detail: str = ""
    first_byte_at: float = 0.0


def answer_headers(raw: list[tuple[bytes, bytes]], request_id: bytes) -> list:
    headers = [(name, value) for name, value in raw if name.lower() not in DROPPED_ANSWER_HEADERS]
    headers.append((b"x-request-id", request_id))
    return headers


async def forward(
    pool: UpstreamPool,
    address: tuple[str, int],
    target: bytes,
    headers: bytes,
    body: bytes,
    stream: bool,
    request_id: bytes,
    send: Send,
    last_attempt: bool,
    started: bool = False,
) -> Attempt:
    """Send the request; an engine that fails before any byte went out is retryable.

    `started`: the gateway began a stream itself (a model loading): the engine's answer
    goes on in it, and an engine's error becomes the stream's last event.
    """
    try:
        answer = await pool.post(address, target, headers, body)
    except UpstreamError as exc:
        return Attempt(False, retryable_detail=str(exc))
    finished = False
    try:
        if answer.status >= 500 and not last_attempt:
            try:
                await answer.read()
                finished = True
            except UpstreamError:
                pass
            return Attempt(False, answer.status, f"HTTP {answer.status}")
        if started:
            attempt = await _continue(answer, send)
        elif stream or answer.header(b"content-type").startswith(EVENT_STREAM):
            attempt = await _relay(answer, request_id, send)
        else:
            try:
                data = await answer.read()
            except UpstreamError as exc:
                return Attempt(False, answer.status, str(exc))
            headers_out = answer_headers(answer.headers, request_id)
            headers_out.append((b"content-length", str(len(data)).encode()))
            await send(
                {"type": "http.response.start", "status": answer.status, "headers": headers_out}
            )
            attempt = Attempt(True, answer.status, first_byte_at=time.monotonic())
            await send({"type": "http.response.body", "body": data})
        finished = True
        return attempt
    finally:
        if finished:
            answer.release()
        else:
            # Cancelled (the client left) or broken: closing the socket tells the engine to
            # stop generating (vLLM aborts the sequence when its client goes away).
            answer.close()


async def _continue(answer: Any, send: Send) -> Attempt:
    """The engine's answer inside a stream the gateway began (its status line went out)."""
    attempt = Attempt(True, answer.status, first_byte_at=time.monotonic())
    if answer.status != 200:
        data = await answer.read()
        error = (
            data.strip()
            or GatewayError(
                502,
                "engine_error",
                f"The engine answered HTTP {answer.status}",
                type="server_error",
            ).body()
        )
        event = b"data: " + error.replace(b"\n", b" ") + b"\n\ndata: [DONE]\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return attempt
    return await _relay_body(answer, send, attempt, True)


async def _relay(answer: Any, request_id: bytes, send: Send) -> Attempt:
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": answer_headers(answer.headers, request_id),
        }
    )
    attempt = Attempt(True, answer.status, first_byte_at=time.monotonic())
    event_stream = answer.header(b"content-type").startswith(EVENT_STREAM)
    return await _relay_body(answer, send, attempt, event_stream)


async def _relay_body(answer: Any, send: Send, attempt: Attempt, event_stream: bool) -> Attempt:
    done = False
    read = answer.read_chunk  # a plain loop: an async generator costs a frame per chunk
    try:
        while (chunk := await read()) is not None:
            if not done and b"[DONE]" in chunk:
                done = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError:
        pass
    if event_stream and not done and answer.status < 400:
        # The engine went away mid-stream: say so in the stream rather than end it as if
        # the answer were complete.
        error = GatewayError(
            502,
            "engine_failed_mid_stream",
            "The engine stopped before the answer was complete; retry the request",
            type="server_error",
        )
        await send({"type": "http.response.body", "body": error.sse_event(), "more_body": True})
        attempt.status = 502
    await send({"type": "http.response.body", "body": b""})
    return attempt


async def fetch_whole(
    pool: UpstreamPool,
    address: tuple[str, int],
    target: bytes,
    headers: bytes,
    body: bytes,
    limit: int,
) -> tuple[int, bytes]:
    """POST and read the whole answer (a prefill's small JSON): (status, body).

    UpstreamError when the engine fails before the answer is complete or sends more than
    `limit` bytes; the connection is given back only after a whole answer.
    """
    answer = await pool.post(address, target, headers, body)
    finished = False
    try:
        parts: list[bytes] = []
        size = 0
        while (chunk := await answer.read_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"answer longer than {limit} bytes", before_answer=False)
            parts.append(chunk)
        finished = True
        return answer.status, b"".join(parts)
    finally:
        if finished:
            answer.release()
        else:
            answer.close()
