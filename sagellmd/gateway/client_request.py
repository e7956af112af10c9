"""Reading a client's request: its body, bounded, and the fields the gateway routes by."""

from __future__ import annotations

from typing import Any

import orjson

from sagellmd.gateway import errors
from sagellmd.gateway.errors import GatewayError

MAX_BODY_BYTES = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


def parse_request(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_body(f"The request body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise errors.bad_body("The request body must be a JSON object with a 'model' field")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_body(
            "The request must name its 'model' (a string: a model name, engine id, label or"
            " alias; GET /v1/models lists them)",
            param="model",
        )
    return request


def priority_of(header: bytes | None, request: dict[str, Any]) -> int:
    value: Any = request.get("priority", 0) if header is None else header
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise errors.bad_body(
            f"priority (field or X-Priority header) must be an integer, lower first; got {value!r}",
            param="priority",
        ) from None


async def read_body(receive: Any) -> bytes:
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(
                413, "request_too_large", f"The request body is over {MAX_BODY_BYTES} bytes"
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)
