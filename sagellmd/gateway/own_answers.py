"""The gateway's answers of its own over ASGI: JSON, OpenAI-shaped errors, stream headers."""

from __future__ import annotations

from typing import Any

from sagellmd.gateway.errors import GatewayError

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def not_here(method: str, path: str) -> GatewayError:
    return GatewayError(
        404,
        "not_found",
        f"{method} {path} is not served here: the gateway serves GET /v1/models and"
        " POST /v1/* requests that name a model (chat/completions, completions, embeddings, ...)",
    )


async def answer(send: Any, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": headers or JSON_HEADERS}
    )
    await send({"type": "http.response.body", "body": body})


async def error_answer(send: Any, error: GatewayError, request_id: bytes = b"") -> None:
    headers = list(JSON_HEADERS)
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after_s))).encode()))
    if request_id:
        headers.append((b"x-request-id", request_id))
    await answer(send, error.status, error.body(), headers)


async def end_stream_with_error(send: Any, error: GatewayError) -> None:
    """An answer already begun (200, SSE) cannot change its status: the error is the
    stream's last event, and the stream ends."""
    await send({"type": "http.response.body", "body": error.sse_event(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
